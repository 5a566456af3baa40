//! `shoal stack ...`: compose files deployed whole, and the stacks seen through the label
//! their services carry.

use std::collections::BTreeMap;

use super::args::StackCmd;
use super::render::table;
use super::{Out, apply, fetch, lower};
use crate::manager::api::ApiClient;
use crate::manager::compose::STACK_LABEL;
use crate::manager::model::Service;
use crate::manager::{Applied, Command, State};

fn of_stack<'a>(state: &'a State, name: &str) -> Vec<&'a Service> {
    state
        .services
        .values()
        .filter(|s| s.spec.labels.get(STACK_LABEL).map(String::as_str) == Some(name))
        .collect()
}

pub(super) fn stack(api: &ApiClient, out: &Out, cmd: StackCmd) -> Result<(), String> {
    match cmd {
        StackCmd::Deploy { file, name } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let applied: Vec<Applied> = api
                .post_text(&format!("/v1/stacks/{name}"), &text)
                .map_err(|e| e.to_string())?;
            out.print(&applied, || {
                format!("Deployed stack {name} ({} changes)", applied.len())
            });
        }
        StackCmd::Ls => {
            let state: State = fetch(api, "/v1/state")?;
            let mut stacks: BTreeMap<&str, usize> = BTreeMap::new();
            for s in state.services.values() {
                if let Some(name) = s.spec.labels.get(STACK_LABEL) {
                    *stacks.entry(name).or_default() += 1;
                }
            }
            let rows: Vec<Vec<String>> = stacks
                .iter()
                .map(|(n, c)| vec![n.to_string(), c.to_string()])
                .collect();
            out.print(&stacks, || table(&["NAME", "SERVICES"], &rows));
        }
        StackCmd::Services { name } => {
            let state: State = fetch(api, "/v1/state")?;
            let services = of_stack(&state, &name);
            let rows: Vec<Vec<String>> = services
                .iter()
                .map(|s| vec![s.id.clone(), s.spec.name.clone(), lower(&s.spec.mode)])
                .collect();
            out.print(&services, || table(&["ID", "NAME", "MODE"], &rows));
        }
        StackCmd::Ps { name } => {
            let state: State = fetch(api, "/v1/state")?;
            let mut rows = Vec::new();
            for s in of_stack(&state, &name) {
                for t in state.tasks_of(&s.id) {
                    let node = t
                        .node
                        .as_ref()
                        .and_then(|n| state.nodes.get(n))
                        .map_or(String::new(), |n| n.hostname.clone());
                    rows.push(vec![
                        t.id.clone(),
                        t.name(&s.spec.name),
                        node,
                        lower(&t.desired),
                        lower(&t.observed),
                    ]);
                }
            }
            out.print(&rows, || {
                table(
                    &["ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE"],
                    &rows,
                )
            });
        }
        StackCmd::Rm { name } => {
            let state: State = fetch(api, "/v1/state")?;
            let services: Vec<String> = of_stack(&state, &name)
                .iter()
                .map(|s| s.spec.name.clone())
                .collect();
            if services.is_empty() {
                return Err(format!(
                    "stack {name:?} not found: `shoal stack ls` lists the stacks"
                ));
            }
            for service in &services {
                apply(
                    api,
                    Command::RemoveService {
                        service: service.clone(),
                    },
                )?;
            }
            // Its networks are the ones named with its prefix that nothing else uses now.
            let prefix = format!("{name}_");
            let networks: Vec<String> = state
                .networks
                .values()
                .map(|n| n.spec.name.clone())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            for network in &networks {
                apply(
                    api,
                    Command::RemoveNetwork {
                        network: network.clone(),
                    },
                )?;
            }
            out.print(&(&services, &networks), || {
                format!("Removed stack {name}: services {services:?}, networks {networks:?}")
            });
        }
    }
    Ok(())
}
