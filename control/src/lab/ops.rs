//! The commands on a running lab: `exec` into a node, a task or a container; `attach` a
//! standalone container; `kill` a node; `cut` and `heal` the underlay.

use std::path::PathBuf;
use std::process::Command;

use super::host;
use super::plan::{ContainerRecord, Dir, Names, Record};
use super::summary::{hostnames, short_name};
use crate::agent::node::api::{AttachRequest, LocalClient};
use crate::manager::State;
use crate::manager::model::TaskState;

/// Where `lab exec` runs a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A node's namespace (the host's files).
    Node(String),
    /// A task: its network, mount and UTS namespaces, as its process has them.
    Task { netns: String, pid: u32 },
    /// A standalone container's namespace, with its resolv.conf.
    Container(String),
}

/// Finds `what`: a node (`n2`), a container attached with `lab attach`, or a task as
/// `SERVICE.SLOT` (`api.1`) or, for a global service, `SERVICE.NODE` (`agent.n2`).
pub fn target(record: &Record, state: &State, what: &str) -> Result<Target, String> {
    let names = Names::new(&record.name);
    if record.nodes.iter().any(|n| n.name == what) {
        return Ok(Target::Node(names.node_netns(what)));
    }
    if record.containers.iter().any(|c| c.name == what) {
        return Ok(Target::Container(names.container_netns(what)));
    }
    let (service, which) = what.rsplit_once('.').ok_or_else(|| {
        format!(
            "{what:?} is no node, container or task of lab {}: give a node (n1), a container \
             (`lab attach`) or a task as SERVICE.SLOT (api.1) or SERVICE.NODE (for a global \
             service)",
            record.name
        )
    })?;
    let svc = state
        .services
        .values()
        .find(|s| s.spec.name == service || short_name(record, &s.spec.name) == service)
        .ok_or_else(|| format!("lab {} has no service {service:?}", record.name))?;
    let hosts = hostnames(state);
    let task = state
        .tasks
        .values()
        .filter(|t| t.service == svc.id && t.desired == TaskState::Running)
        .find(|t| {
            t.slot.map(|s| s.to_string()).as_deref() == Some(which)
                || t.node.as_deref().and_then(|n| hosts.get(n).copied()) == Some(which)
        })
        .ok_or_else(|| format!("service {service} has no running task {which:?}"))?;
    let node = task
        .node
        .as_deref()
        .and_then(|n| hosts.get(n).copied())
        .ok_or_else(|| format!("task {what} has no node yet"))?;
    let netns = crate::agent::node::sandbox_name(&names.node_netns(node), &task.id);
    let pid = host::pids_in(&netns)
        .into_iter()
        .min()
        .ok_or_else(|| format!("task {what}: no process runs in {netns} (is it starting?)"))?;
    Ok(Target::Task { netns, pid })
}

/// The command that runs `argv` at `target`.
pub fn command(target: &Target, argv: &[String]) -> Command {
    let mut c = match target {
        Target::Node(netns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{netns}")).arg("--");
            c
        }
        Target::Task { pid, .. } => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-n", "-m", "-u", "--"]);
            c
        }
        Target::Container(netns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]);
            c
        }
    };
    c.args(argv);
    c
}

/// `lab exec`: runs the command there, with this terminal; its exit code.
pub fn exec(record: &Record, state: &State, what: &str, argv: &[String]) -> Result<i32, String> {
    if argv.is_empty() {
        return Err("give the command after --: shoal lab exec LAB TARGET -- CMD ARGS".into());
    }
    let t = target(record, state, what)?;
    let status = command(&t, argv)
        .status()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    Ok(status.code().unwrap_or(128 + 9))
}

/// `lab attach`: a new namespace `<lab>-c-<name>` attached to `network` by `node`'s agent,
/// with a resolv.conf pointing at the agent's resolver.
pub fn attach(
    dir: &Dir,
    record: &mut Record,
    state: &State,
    network: &str,
    name: &str,
    node: &str,
) -> Result<String, String> {
    super::plan::check_name(name).map_err(|_| {
        format!("container name {name:?}: use a-z, 0-9 and _, starting with a letter")
    })?;
    record.node(node)?;
    if record.containers.iter().any(|c| c.name == name) {
        return Err(format!(
            "lab {} already has a container {name}: pick another name",
            record.name
        ));
    }
    // The stack's networks are `<stack>_<name>`: the short name is enough.
    let full = state
        .networks
        .values()
        .map(|n| n.spec.name.as_str())
        .find(|n| *n == network || short_name(record, n) == network)
        .ok_or_else(|| format!("lab {} has no network {network:?}", record.name))?
        .to_owned();
    let netns = Names::new(&record.name).container_netns(name);
    host::add_netns(&netns)?;
    host::write_resolv_conf(&netns)?;
    let request = AttachRequest {
        container: name.to_owned(),
        name: Some(name.to_owned()),
        network: full.clone(),
        netns: PathBuf::from("/run/netns").join(&netns),
        ifname: None,
    };
    match LocalClient::new(dir.socket(node)).attach(&request) {
        Ok(a) => {
            record.containers.push(ContainerRecord {
                name: name.to_owned(),
                node: node.to_owned(),
                network: full,
            });
            Ok(format!(
                "container {name} on {node}: {} {} on {} (DNS {})",
                a.ifname, a.address, a.network, a.dns
            ))
        }
        Err(e) => {
            host::remove_netns(&netns);
            Err(format!("attaching {name} to {network} on {node}: {e}"))
        }
    }
}

/// `lab kill`: the node is lost — its agent, its tasks and (if it is the manager's node) the
/// manager are SIGKILLed; its namespaces stay, as a powered-off machine's cables do.
pub fn kill(record: &mut Record, node: &str) -> Result<String, String> {
    let names = Names::new(&record.name);
    let netns = names.node_netns(node);
    let n = record.node_mut(node)?;
    n.agent_pid = None;
    // Tasks first, then the node's own namespace (agent, and manager if here).
    for ns in host::netns_with_prefix(&format!("{netns}-")) {
        host::kill_all_in(&ns);
    }
    host::kill_all_in(&netns);
    let mut said = format!("node {node} killed: its agent and tasks are gone");
    if record.manager_node == node {
        record.manager_pid = None;
        said.push_str(
            "; the manager ran there, so nothing is rescheduled until `lab up` restarts it",
        );
    }
    Ok(said)
}

/// `lab cut NODE` (down) or `lab heal [NODE]` (up).
pub fn set_cut(record: &mut Record, node: Option<&str>, cut: bool) -> Result<String, String> {
    let names = Names::new(&record.name);
    let which: Vec<usize> = match node {
        Some(n) => vec![record.node_index(n)?],
        None => (0..record.nodes.len()).collect(),
    };
    for &i in &which {
        host::set_cut(&names, i, cut)?;
        record.nodes[i].cut = cut;
    }
    let list: Vec<&str> = which
        .iter()
        .map(|&i| record.nodes[i].name.as_str())
        .collect();
    Ok(if cut {
        format!(
            "{} cut off the underlay (its processes go on)",
            list.join(", ")
        )
    } else {
        format!("{} back on the underlay", list.join(", "))
    })
}
