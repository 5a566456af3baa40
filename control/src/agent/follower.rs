//! Following the manager: long-poll the node's view from the last revision seen (so a
//! reconnect resumes where it left off), and report task states back. Without a task runtime
//! (`--no-runtime`) it reports wanted tasks as running and stopped ones as shut down, which is
//! what the manager's scheduling needs to be exercised end to end; it starts nothing.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::manager::api::{ApiClient, ClientError};
use crate::manager::model::{Role, TaskState};
use crate::manager::view::NodeView;
use crate::manager::{Applied, Command};

/// Who this node is.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub hostname: String,
    pub addr: Ipv4Addr,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Registers the node if the manager does not know it yet.
pub fn register(api: &ApiClient, me: &Identity) -> Result<(), ClientError> {
    let command = Command::AddNode {
        id: me.id.clone(),
        hostname: me.hostname.clone(),
        role: Role::Worker,
        addr: me.addr,
        labels: me.labels.clone(),
    };
    match api.post::<_, Applied>("/v1/commands", &command) {
        Ok(_) => Ok(()),
        // Known already: a restart of this agent, not a new node.
        Err(ClientError::Refused { status: 409, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the node tells the manager after a view: each task whose observed state lags its
/// desired one, and each key epoch of its networks it holds but has not acknowledged (the
/// manager switches a network to a new key once every attached node did).
pub fn reports(view: &NodeView) -> Vec<Command> {
    let mut reports: Vec<Command> = assumed_task_reports(view).collect();
    reports.extend(key_reports(view));
    reports
}

/// Without a runtime: each task reported as what it is desired to be.
fn assumed_task_reports(view: &NodeView) -> impl Iterator<Item = Command> + '_ {
    view.tasks.iter().filter_map(|t| {
        let observed = match t.desired {
            TaskState::Running if !t.observed.is_terminal() && t.observed != TaskState::Running => {
                TaskState::Running
            }
            TaskState::Shutdown if !t.observed.is_terminal() => TaskState::Shutdown,
            _ => return None,
        };
        Some(Command::TaskStatus {
            task: t.task.clone(),
            observed,
            message: String::new(),
        })
    })
}

/// The key epochs (networks' and gossip's) this node holds and has not acknowledged.
pub fn key_reports(view: &NodeView) -> Vec<Command> {
    let keys = view.networks.iter().flat_map(|n| {
        let epochs = n.keys.iter().flat_map(|k| k.epochs.iter());
        epochs
            .filter(|e| !e.acked.contains(&view.node))
            .map(|e| Command::KeyAck {
                node: view.node.clone(),
                network: n.id.clone(),
                epoch: e.epoch,
            })
    });
    let gossip = view
        .gossip_keys
        .epochs
        .iter()
        .filter(|e| !e.acked.contains(&view.node))
        .map(|e| Command::GossipKeyAck {
            node: view.node.clone(),
            epoch: e.epoch,
        });
    keys.chain(gossip).collect()
}

/// Follows the stream until `stop` is set: every view goes to `on_view`, and what it returns
/// is reported. A lost manager is retried with backoff (up to 5 s between tries); the
/// revision it had is kept, so nothing is replayed or missed. `on_link` hears whether the
/// manager answers. `register_first`: add the node first (a manager run `--insecure`); a
/// node that joined with a token is in the cluster already.
pub fn follow(
    api: &ApiClient,
    me: &Identity,
    register_first: bool,
    stop: &AtomicBool,
    mut on_view: impl FnMut(&NodeView) -> Vec<Command>,
    mut on_link: impl FnMut(bool),
) {
    let mut revision = 0u64;
    let mut backoff = Duration::from_millis(100);
    let mut registered = !register_first;
    while !stop.load(Ordering::Relaxed) {
        let step = (if registered {
            Ok(())
        } else {
            register(api, me)
        })
        .and_then(|()| {
            registered = true;
            let view: NodeView = api.get(&format!("/v1/nodes/{}/view?after={revision}", me.id))?;
            on_link(true);
            for report in on_view(&view) {
                api.post::<_, Applied>("/v1/commands", &report)?;
            }
            Ok(view.revision)
        });
        match step {
            Ok(seen) => {
                revision = seen;
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                on_link(false);
                // A manager restarted from an older store may not know us: register again.
                registered = !register_first && registered;
                eprintln!("agent {}: {e}; retrying in {backoff:?}", me.hostname);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
