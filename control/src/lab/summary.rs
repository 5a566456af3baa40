//! What `lab up` prints at the end: the nodes, the networks, where each service's tasks run,
//! and how to reach the published ports from this host. Pure: a record and a state in, text
//! out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::plan::{self, Record};
use crate::cli::render::table;
use crate::manager::State;
use crate::manager::model::{Role, ServiceMode, TaskState};

/// A service's short name: without its stack's `<stack>_` (what the tasks resolve).
pub fn short_name<'a>(record: &Record, name: &'a str) -> &'a str {
    record
        .stack
        .as_deref()
        .and_then(|s| name.strip_prefix(s)?.strip_prefix('_'))
        .unwrap_or(name)
}

/// Node ids to the lab's node names.
pub fn hostnames(state: &State) -> BTreeMap<&str, &str> {
    state
        .nodes
        .values()
        .map(|n| (n.id.as_str(), n.hostname.as_str()))
        .collect()
}

pub fn render(record: &Record, state: &State) -> String {
    let mut out = String::new();
    let host = plan::host_addr(record.subnet);
    let _ = writeln!(
        out,
        "\nLab {}: {} nodes on {} (this host is {host}), manager on {}\n",
        record.name,
        record.nodes.len(),
        record.subnet,
        record.manager_node
    );
    let rows: Vec<Vec<String>> = record
        .nodes
        .iter()
        .map(|n| {
            let node = state.nodes.values().find(|s| s.hostname == n.name);
            let role = match node.map(|s| s.role) {
                Some(Role::Manager) => "manager",
                Some(_) => "worker",
                None => "-",
            };
            let status = node
                .map(|s| crate::cli::lower(&s.status))
                .unwrap_or_else(|| "not joined".into());
            let status = if n.cut {
                format!("{status} (cut)")
            } else {
                status
            };
            vec![n.name.clone(), n.addr.to_string(), role.into(), status]
        })
        .collect();
    let _ = writeln!(
        out,
        "{}\n",
        table(&["NODE", "ADDRESS", "ROLE", "STATUS"], &rows)
    );

    let rows: Vec<Vec<String>> = state
        .networks
        .values()
        .filter(|n| !n.ingress)
        .map(|n| {
            let flags = [
                (n.spec.encrypted, "encrypted"),
                (n.spec.attachable, "attachable"),
                (n.spec.internal, "internal"),
            ];
            let flags: Vec<&str> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
            vec![
                n.spec.name.clone(),
                n.subnet.to_string(),
                n.vni.to_string(),
                flags.join(","),
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "{}\n",
        table(&["NETWORK", "SUBNET", "VNI", "OPTIONS"], &rows)
    );

    let names = hostnames(state);
    let mut published = Vec::new();
    let rows: Vec<Vec<String>> = state
        .services
        .values()
        .map(|s| {
            let mut tasks: Vec<String> = state
                .tasks
                .values()
                .filter(|t| t.service == s.id && t.desired == TaskState::Running)
                .map(|t| {
                    let node = t
                        .node
                        .as_deref()
                        .and_then(|n| names.get(n).copied())
                        .unwrap_or("-");
                    let slot = t.slot.map(|s| s.to_string()).unwrap_or_default();
                    let mark = if t.observed == TaskState::Running {
                        ""
                    } else {
                        "?"
                    };
                    format!("{slot}@{node}{mark}")
                })
                .collect();
            tasks.sort();
            let mode = match s.spec.mode {
                ServiceMode::Replicated { replicas } => format!("replicated {replicas}"),
                ServiceMode::Global => "global".into(),
            };
            let ports: Vec<String> = s
                .ports
                .iter()
                .filter_map(|p| Some(format!("{}->{}", p.published?, p.target)))
                .collect();
            for p in &s.ports {
                if let Some(port) = p.published {
                    published.push((port, short_name(record, &s.spec.name).to_owned()));
                }
            }
            vec![
                short_name(record, &s.spec.name).to_owned(),
                mode,
                tasks.join(" "),
                ports.join(","),
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "{}\n",
        table(&["SERVICE", "MODE", "TASKS (slot@node)", "PORTS"], &rows)
    );

    if !published.is_empty() {
        let _ = writeln!(
            out,
            "Published ports, served on every node, from this host:"
        );
        let first = record.nodes.first().map(|n| n.addr.to_string());
        let last = record.nodes.last().map(|n| n.addr.to_string());
        for (port, service) in published {
            let _ = writeln!(
                out,
                "  curl http://{}:{port}/    ({service}; any node {} … {})",
                first.as_deref().unwrap_or("-"),
                first.as_deref().unwrap_or("-"),
                last.as_deref().unwrap_or("-"),
            );
        }
        out.push('\n');
    }
    let lab = &record.name;
    let _ = writeln!(
        out,
        "Next: shoal lab matrix {lab}   shoal lab exec {lab} SERVICE.1 -- CMD   shoal lab down {lab}"
    );
    out
}
