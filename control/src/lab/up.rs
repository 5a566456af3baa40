//! `shoal lab up`: the underlay, the node namespaces, `shoal init`, the manager and an agent
//! per node (real processes, each in its node's namespace, joined with the worker token), the
//! stack deployed, then the summary. Run again on a lab that is up, it adds the nodes it
//! lacks and restarts the daemons that are gone; nothing is made twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::host;
use super::plan::{self, Dir, Names, NodeRecord, Record};
use super::summary;
use crate::manager::State;
use crate::manager::api::ApiClient;
use crate::manager::api::join::Tokens;
use crate::manager::model::{NodeStatus, ServiceMode, TaskState};

/// The example stack `lab up` deploys when no file is given.
pub const SEED_STACK: &str = include_str!("../../../examples/seed/stack.yml");

/// How long the cluster may take to come up before `up` gives the reasons and stops.
const READY_WITHIN: Duration = Duration::from_secs(90);

#[derive(Clone, Debug)]
pub struct UpArgs {
    pub name: String,
    pub nodes: usize,
    pub managers: usize,
    /// The compose file; `None`: the seed stack (only when the lab is new).
    pub file: Option<PathBuf>,
    pub subnet: Option<Ipv4Net>,
    /// Extra flags for every agent (`--drain 1`, ...).
    pub agent_flags: Vec<String>,
    /// The agents' `--algorithm` (kept in the record for later restarts).
    pub algorithm: Option<String>,
    /// Print the matrix after the summary.
    pub matrix: bool,
    /// Print neither summary nor matrix (another command runs `up` for its own ends).
    pub quiet: bool,
}

pub fn up(args: &UpArgs) -> Result<(), String> {
    plan::check_name(&args.name)?;
    if args.managers != 1 {
        return Err(format!(
            "--managers {}: a shoal cluster has one manager for now (replicated managers are on \
             the roadmap); its agents and the data path go on without it",
            args.managers
        ));
    }
    if args.nodes == 0 || args.nodes > 64 {
        return Err(format!("--nodes {}: between 1 and 64", args.nodes));
    }
    let dir = Dir::of(&args.name);
    let names = Names::new(&args.name);
    let program = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let existing = dir.load().ok();
    let fresh = existing.is_none();
    let mut record = match existing {
        Some(r) => r,
        None => new_record(args, &dir)?,
    };
    std::fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
    if args.algorithm.is_some() {
        record.algorithm = args.algorithm.clone();
    }
    dir.save(&record)?;

    say(&format!(
        "lab {}: underlay {} (this host at {})",
        record.name,
        record.subnet,
        plan::host_addr(record.subnet)
    ));
    host::add_underlay(&names, record.subnet, plan::host_addr(record.subnet))?;
    for i in 0..args.nodes.max(record.nodes.len()) {
        let name = Names::node_name(i);
        let addr = plan::node_addr(record.subnet, i)
            .ok_or_else(|| format!("{} has no address left for {name}", record.subnet))?;
        host::add_node(&names, i, &name, addr, record.subnet)?;
        if record.nodes.iter().all(|n| n.name != name) {
            record.nodes.push(NodeRecord {
                name,
                addr,
                agent_pid: None,
                cut: false,
            });
        }
    }
    dir.save(&record)?;

    if fresh {
        init(&program, &dir, &record)?;
    }
    start_manager(&program, &dir, &names, &mut record)?;
    dir.save(&record)?;
    let api = super::client(&dir, &record)?;
    wait_for("the manager to answer", &dir, || {
        api.get::<State>("/v1/state").map(|_| true).unwrap_or(false)
    })?;
    if record.token.is_empty() {
        let tokens: Tokens = api.get("/v1/join-tokens").map_err(|e| e.to_string())?;
        record.token = tokens.worker;
        record.manager_token = tokens.manager;
        dir.save(&record)?;
    }
    let mut flags = args.agent_flags.clone();
    if let Some(a) = &record.algorithm {
        flags.extend(["--algorithm".to_owned(), a.clone()]);
    }
    start_agents(&program, &dir, &names, &mut record, &flags)?;
    dir.save(&record)?;
    let hostnames: Vec<String> = record.nodes.iter().map(|n| n.name.clone()).collect();
    wait_for("every agent to join", &dir, || {
        api.get::<State>("/v1/state")
            .map(|s| {
                hostnames.iter().all(|h| {
                    s.nodes
                        .values()
                        .any(|n| &n.hostname == h && n.status == NodeStatus::Ready)
                })
            })
            .unwrap_or(false)
    })?;
    say(&format!("{} nodes ready", record.nodes.len()));

    let stack = match (&args.file, fresh) {
        (Some(file), _) => Some((plan::stack_name(file), read(file)?)),
        (None, true) => Some(("seed".to_owned(), SEED_STACK.to_owned())),
        (None, false) => None,
    };
    if let Some((name, text)) = stack {
        let applied: Vec<crate::manager::Applied> = api
            .post_text(&format!("/v1/stacks/{name}"), &text)
            .map_err(|e| format!("deploying stack {name}: {e}"))?;
        say(&format!(
            "stack {name} deployed ({} changes)",
            applied.len()
        ));
        record.stack = Some(name);
        dir.save(&record)?;
    }
    wait_tasks(&api, &dir)?;
    wait_backends(&api, &dir, &record)?;
    if args.quiet {
        return Ok(());
    }
    let state: State = api.get("/v1/state").map_err(|e| e.to_string())?;
    print!("{}", summary::render(&record, &state));
    if args.matrix {
        let sources = super::matrix::sources(&record, &state);
        let destinations = super::matrix::destinations(&record, &state);
        let got = super::probe::run(&sources, &destinations);
        println!("\nWho reaches whom (`shoal lab matrix {}`):\n", record.name);
        print!("{}", super::matrix::render(&sources, &destinations, &got));
    }
    Ok(())
}

fn new_record(args: &UpArgs, dir: &Dir) -> Result<Record, String> {
    let subnet = match args.subnet {
        Some(s) if s.prefix_len() == 24 => s.trunc(),
        Some(s) => return Err(format!("--subnet {s}: give a /24")),
        None => {
            let mut taken = host::host_routes();
            taken.extend(super::ls::records().iter().map(|r| r.subnet));
            plan::pick_subnet(&taken)?
        }
    };
    let _ = std::fs::remove_dir_all(&dir.0);
    Ok(Record {
        name: args.name.clone(),
        subnet,
        nodes: Vec::new(),
        manager_node: Names::node_name(0),
        manager_pid: None,
        token: String::new(),
        manager_token: String::new(),
        algorithm: None,
        stack: None,
        containers: Vec::new(),
    })
}

fn read(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))
}

/// `shoal init` for the lab: the cluster CA, the manager's state, the CLI's credentials.
fn init(program: &Path, dir: &Dir, record: &Record) -> Result<(), String> {
    let addr = record.node(&record.manager_node)?.addr.to_string();
    let out = std::process::Command::new(program)
        .arg("init")
        .arg("--state")
        .arg(dir.manager_state())
        .args(["--advertise", &addr])
        .arg("--certs-out")
        .arg(dir.certs())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "shoal init: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn running(pid: Option<u32>) -> bool {
    pid.is_some_and(host::is_shoal)
}

fn start_manager(
    program: &Path,
    dir: &Dir,
    names: &Names,
    record: &mut Record,
) -> Result<(), String> {
    if running(record.manager_pid) {
        return Ok(());
    }
    let listen = record.manager_addr()?.to_string();
    let state = dir.manager_state().display().to_string();
    let pid = host::spawn_in(
        &names.node_netns(&record.manager_node),
        program,
        &[
            "manager",
            "--listen",
            &listen,
            "--state",
            &state,
            // A node silent for 10 s is down: a lab kill shows its effect in seconds.
            "--node-down-after",
            "10",
        ],
        &dir.log("manager"),
    )?;
    say(&format!("manager on {} at {listen}", record.manager_node));
    record.manager_pid = Some(pid);
    Ok(())
}

fn start_agents(
    program: &Path,
    dir: &Dir,
    names: &Names,
    record: &mut Record,
    flags: &[String],
) -> Result<(), String> {
    let manager = record.manager_addr()?.to_string();
    let (worker, manager_node) = (record.token.clone(), record.manager_node.clone());
    let manager_token = record.manager_token.clone();
    for node in &mut record.nodes {
        let token = if node.name == manager_node && !manager_token.is_empty() {
            &manager_token
        } else {
            &worker
        };
        if running(node.agent_pid) || node.cut {
            continue;
        }
        let state = dir.node_state(&node.name);
        std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let addr = node.addr.to_string();
        let state_s = state.display().to_string();
        let prefix = names.node_netns(&node.name);
        let socket = dir.socket(&node.name).display().to_string();
        let mut argv: Vec<&str> = vec![
            "agent",
            "--join",
            &manager,
            "--token",
            token,
            "--hostname",
            &node.name,
            "--addr",
            &addr,
            "--state-dir",
            &state_s,
            "--netns-prefix",
            &prefix,
            "--socket",
            &socket,
        ];
        argv.extend(flags.iter().map(String::as_str));
        let pid = host::spawn_in(&prefix, program, &argv, &dir.log(&node.name))?;
        say(&format!("agent on {} at {addr}", node.name));
        node.agent_pid = Some(pid);
    }
    Ok(())
}

/// Every service has its tasks running: replicated ones as many as asked, global ones one per
/// ready, active node it may run on (the manager decides which; a pending task counts against).
pub fn tasks_settled(state: &State) -> (usize, usize) {
    let mut want = 0;
    let mut have = 0;
    for service in state.services.values() {
        let live: Vec<_> = state
            .tasks
            .values()
            .filter(|t| t.service == service.id && t.desired == TaskState::Running)
            .collect();
        want += match service.spec.mode {
            ServiceMode::Replicated { replicas } => replicas as usize,
            ServiceMode::Global => live.len(),
        };
        have += live
            .iter()
            .filter(|t| t.observed == TaskState::Running)
            .count();
    }
    (have, want)
}

fn wait_tasks(api: &ApiClient, dir: &Dir) -> Result<(), String> {
    let mut last = None;
    let settled = wait_for("the tasks to run", dir, || {
        let Ok(state) = api.get::<State>("/v1/state") else {
            return false;
        };
        let (have, want) = tasks_settled(&state);
        if last != Some(have) {
            say(&format!("tasks running: {have}/{want}"));
            last = Some(have);
        }
        have == want
    });
    if settled.is_err()
        && let Ok(state) = api.get::<State>("/v1/state")
    {
        for t in state
            .tasks
            .values()
            .filter(|t| t.desired == TaskState::Running && t.observed != TaskState::Running)
        {
            let service = state
                .services
                .get(&t.service)
                .map(|s| s.spec.name.as_str())
                .unwrap_or("?");
            eprintln!(
                "  {} on {}: {:?} {}",
                t.name(service),
                t.node.as_deref().unwrap_or("no node"),
                t.observed,
                t.message
            );
        }
    }
    settled
}

/// How many VIP backends the agents hold of how many they should: for every VIP an agent
/// balances, every running task of its service, active. The manager knows the tasks run; this
/// is the agents having learnt them through gossip (names and VIPs answer in full).
pub fn backends_known(
    state: &State,
    statuses: &[crate::agent::node::report::Status],
) -> (usize, usize) {
    let (mut have, mut want) = (0, 0);
    for status in statuses {
        for vip in &status.vips {
            let Some(service) = state
                .services
                .values()
                .find(|s| s.vips.values().any(|v| *v == vip.vip))
            else {
                continue;
            };
            want += state
                .tasks
                .values()
                .filter(|t| {
                    t.service == service.id
                        && t.desired == TaskState::Running
                        && t.observed == TaskState::Running
                })
                .count();
            have += vip.backends.iter().filter(|b| b.state == "active").count();
        }
    }
    (have, want)
}

fn wait_backends(api: &ApiClient, dir: &Dir, record: &Record) -> Result<(), String> {
    let mut last = None;
    wait_for("every agent to learn every task", dir, || {
        let Ok(state) = api.get::<State>("/v1/state") else {
            return false;
        };
        let statuses: Vec<_> = record
            .nodes
            .iter()
            .filter(|n| !n.cut)
            .filter_map(|n| {
                crate::agent::node::api::LocalClient::new(dir.socket(&n.name))
                    .status()
                    .ok()
            })
            .collect();
        if statuses.len() < record.nodes.iter().filter(|n| !n.cut).count() {
            return false;
        }
        // The agents run what the manager believes runs (after an agent restart the manager
        // still counts the tasks that the new agent is only starting again).
        let running_here: usize = statuses
            .iter()
            .map(|s| s.tasks.iter().filter(|t| t.phase == "running").count())
            .sum();
        let (running, wanted) = tasks_settled(&state);
        let (have, want) = backends_known(&state, &statuses);
        if last != Some((have, running_here)) {
            say(&format!(
                "VIP backends known to the agents: {have}/{want}; tasks running on the agents: \
                 {running_here}/{running}"
            ));
            last = Some((have, running_here));
        }
        have == want && running_here == running && running == wanted
    })
}

/// Polls `ready` every 100 ms for [`READY_WITHIN`]; the error names what was awaited and
/// where the logs are.
fn wait_for(what: &str, dir: &Dir, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    #[allow(clippy::disallowed_methods)] // a command's own deadline, not a core's clock
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if ready() {
            return Ok(());
        }
        #[allow(clippy::disallowed_methods)]
        if Instant::now() >= deadline {
            return Err(format!(
                "waited {} s for {what}; the daemons' logs are in {} (manager.log, n1.log, ...)",
                READY_WITHIN.as_secs(),
                dir.0.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Progress goes to stderr: stdout is the summary (and JSON, for programs).
pub fn say(line: &str) {
    eprintln!("{line}");
}
