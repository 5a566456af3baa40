//! `shoal node ...`.

use super::args::{AvailabilityArg, NodeCmd, RoleArg};
use super::render::table;
use super::{Out, apply, fetch, lower, specs};
use crate::manager::api::ApiClient;
use crate::manager::model::{Availability, Role};
use crate::manager::{Command, State};

pub(super) fn node(api: &ApiClient, out: &Out, cmd: NodeCmd) -> Result<(), String> {
    match cmd {
        NodeCmd::Add {
            id,
            hostname,
            addr,
            role,
            labels,
        } => {
            let role = match role {
                RoleArg::Manager => Role::Manager,
                RoleArg::Worker => Role::Worker,
            };
            let labels = specs::pairs("--label", &labels)?;
            let applied = apply(
                api,
                Command::AddNode {
                    id: id.clone(),
                    hostname,
                    role,
                    addr,
                    labels,
                },
            )?;
            out.print(&applied, || id);
        }
        NodeCmd::Ls => {
            let state: State = fetch(api, "/v1/state")?;
            let rows: Vec<Vec<String>> = state
                .nodes
                .values()
                .map(|n| {
                    vec![
                        n.id.clone(),
                        n.hostname.clone(),
                        lower(&n.status),
                        lower(&n.availability),
                        lower(&n.role),
                        n.addr.to_string(),
                    ]
                })
                .collect();
            out.print(&state.nodes, || {
                table(
                    &[
                        "ID",
                        "HOSTNAME",
                        "STATUS",
                        "AVAILABILITY",
                        "ROLE",
                        "ADDRESS",
                    ],
                    &rows,
                )
            });
        }
        NodeCmd::Inspect { node } => {
            let state: State = fetch(api, "/v1/state")?;
            let node = state.node(&node).map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(node).unwrap_or_default());
        }
        NodeCmd::Promote { node } => set_role(api, out, node, Role::Manager)?,
        NodeCmd::Demote { node } => set_role(api, out, node, Role::Worker)?,
        NodeCmd::Update {
            node,
            availability,
            label_add,
            label_rm,
        } => {
            let availability = availability.map(|a| match a {
                AvailabilityArg::Active => Availability::Active,
                AvailabilityArg::Pause => Availability::Pause,
                AvailabilityArg::Drain => Availability::Drain,
            });
            let labels_add = specs::pairs("--label-add", &label_add)?;
            let applied = apply(
                api,
                Command::UpdateNode {
                    node: node.clone(),
                    availability,
                    role: None,
                    labels_add,
                    labels_rm: label_rm,
                },
            )?;
            out.print(&applied, || node);
        }
    }
    Ok(())
}

fn set_role(api: &ApiClient, out: &Out, node: String, role: Role) -> Result<(), String> {
    let command = Command::UpdateNode {
        node: node.clone(),
        availability: None,
        role: Some(role),
        labels_add: Default::default(),
        labels_rm: Vec::new(),
    };
    let applied = apply(api, command)?;
    out.print(&applied, || {
        format!("node {node} is now a {}", lower(&role))
    });
    Ok(())
}
