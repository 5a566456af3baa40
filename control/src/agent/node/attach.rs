//! Standalone containers (another orchestrator's, or `shoal attach`'s): the manager gives the
//! address on an attachable network (and refuses any other network), the agent adds an
//! interface to the container's namespace, serves the resolver there, and announces the
//! endpoint in the peer table. One resolver per namespace, whose scope grows with each
//! network. A failure part way undoes every step, the manager's allocation included.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use dataplane::shell::netns::NetnsRef;

use crate::agent::peers::{PEER_TABLE, PeerRecord};
use crate::manager::api::ClientError;
use crate::manager::{Applied, Command};

use super::sandbox::{Interface, Sandbox};
use super::{Agent, Shared};

/// What to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachSpec {
    /// The runtime's id of the container (CNI's CONTAINER_ID).
    pub container: String,
    /// Its name on the network (the manager's record).
    pub name: String,
    /// The network's name (or id).
    pub network: String,
    pub netns: PathBuf,
    pub ifname: String,
}

/// One network of an attached container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub container: String,
    pub name: String,
    pub network: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: [u8; 6],
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// The manager's id of the attachment.
    pub manager_id: String,
}

/// Why an attach or detach failed: an HTTP-like status and a message that names the
/// object, the cause and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttachFailure {
    pub status: u16,
    pub message: String,
}

fn failure(status: u16, message: impl Into<String>) -> AttachFailure {
    AttachFailure {
        status,
        message: message.into(),
    }
}

/// A container's sandbox and its networks.
pub(super) struct Container {
    sandbox: Sandbox,
    networks: Vec<Attached>,
}

/// How long the manager's view takes at most to bring a network the node did not have.
const NETWORK_WAIT: Duration = Duration::from_secs(10);

impl Agent {
    /// Attaches a container's namespace to a network.
    pub fn attach(&self, spec: &AttachSpec) -> Result<Attached, AttachFailure> {
        let shared = &self.shared;
        if !spec.netns.exists() {
            return Err(failure(
                400,
                format!(
                    "network namespace {} does not exist: give the path of the container's (e.g. /proc/PID/ns/net or /run/netns/NAME)",
                    spec.netns.display()
                ),
            ));
        }
        if shared.containers().get(&spec.container).is_some_and(|c| {
            c.networks
                .iter()
                .any(|a| a.network == spec.network || a.ifname == spec.ifname)
        }) {
            return Err(failure(
                409,
                format!(
                    "container {} is already attached to network {} or has an interface {}: detach it first",
                    spec.container, spec.network, spec.ifname
                ),
            ));
        }
        let command = Command::AttachContainer {
            network: spec.network.clone(),
            name: spec.name.clone(),
            node: shared.config.identity.id.clone(),
        };
        let applied: Applied = shared
            .api
            .post("/v1/commands", &command)
            .map_err(manager_failure)?;
        let (Some(manager_id), Some(ip)) = (applied.id, applied.address) else {
            return Err(failure(
                500,
                "the manager attached the container but gave no id or address",
            ));
        };
        let undo_manager = || {
            let _ = shared.api.post::<_, Applied>(
                "/v1/commands",
                &Command::DetachContainer {
                    container: manager_id.clone(),
                },
            );
        };
        let built = self.add_interface(spec, &manager_id, ip);
        if built.is_err() {
            undo_manager();
        }
        built
    }

    /// The network in the node's programming (the manager's view brings it once the
    /// container is recorded), the interface in the namespace, the resolver, the entry.
    fn add_interface(
        &self,
        spec: &AttachSpec,
        manager_id: &str,
        ip: Ipv4Addr,
    ) -> Result<Attached, AttachFailure> {
        let shared = &self.shared;
        let mut found = None;
        let arrived = wait_for(NETWORK_WAIT, || {
            let local = shared.local();
            found = local
                .networks
                .values()
                .find(|n| n.view.name == spec.network || n.view.id == spec.network)
                .map(|n| n.view.clone());
            found.is_some()
        });
        let net = found.filter(|_| arrived).ok_or_else(|| {
            failure(
                503,
                format!(
                    "network {} did not reach this node within {NETWORK_WAIT:?}: is the agent following the manager?",
                    spec.network
                ),
            )
        })?;
        let vni = super::plan::vni_of(&net)
            .ok_or_else(|| failure(500, format!("network {}: bad VNI {}", net.name, net.vni)))?;
        let encrypted = net.keys.is_some();
        let interface = Interface {
            network: net.id.clone(),
            vni,
            endpoint: shared.endpoint_id(),
            name: spec.ifname.clone(),
            ip,
            prefix_len: net.subnet.prefix_len(),
            mtu: shared.dataplane.overlay_mtu(encrypted),
            gateway: None,
        };
        let mut containers = shared.containers();
        let attached = Attached {
            container: spec.container.clone(),
            name: spec.name.clone(),
            network: net.name.clone(),
            netns: spec.netns.clone(),
            ifname: spec.ifname.clone(),
            ip,
            prefix_len: interface.prefix_len,
            mac: interface.mac().0,
            gateway: net.gateway,
            mtu: interface.mtu,
            manager_id: manager_id.to_owned(),
        };
        match containers.get_mut(&spec.container) {
            Some(c) => {
                let mut interface = interface.clone();
                interface.gateway =
                    (!net.internal && !c.sandbox.has_default_route()).then_some(net.gateway);
                c.sandbox
                    .add_interface(&shared.dataplane, &shared.dns, interface.clone())
                    .map_err(|e| failure(500, format!("interface {}: {e}", spec.ifname)))?;
                c.networks.push(attached.clone());
            }
            None => {
                let mut interface = interface.clone();
                interface.gateway = (!net.internal).then_some(net.gateway);
                let sandbox = Sandbox::build(
                    &shared.dataplane,
                    &shared.dns,
                    NetnsRef::Path(spec.netns.clone()),
                    None,
                    format!("container-{}", spec.container),
                    vec![interface],
                )
                .map_err(|e| failure(500, format!("sandbox of {}: {e}", spec.container)))?;
                containers.insert(
                    spec.container.clone(),
                    Container {
                        sandbox,
                        networks: vec![attached.clone()],
                    },
                );
            }
        }
        drop(containers);
        let record = PeerRecord {
            ip,
            mac: attached.mac,
            node: shared.overlay,
        };
        let (key, value) = PeerRecord::entry(&net.id, &endpoint_key(&spec.container), &record);
        if let Err(e) = shared.gossip.write(key, Some(value)) {
            tracing::warn!(container = spec.container, "gossip: {e}");
        }
        Ok(attached)
    }

    /// Detaches a container from one network, or from all of them; returns what it
    /// detached. Detaching what is not attached detaches nothing (CNI's DEL is idempotent).
    pub fn detach(
        &self,
        container: &str,
        network: Option<&str>,
    ) -> Result<Vec<Attached>, AttachFailure> {
        let shared = &self.shared;
        let mut containers = shared.containers();
        let Some(c) = containers.get_mut(container) else {
            return Ok(Vec::new());
        };
        let (gone, kept): (Vec<Attached>, Vec<Attached>) = c
            .networks
            .drain(..)
            .partition(|a| network.is_none_or(|n| a.network == n));
        c.networks = kept;
        for a in &gone {
            if let Some(i) = c.sandbox.interfaces.iter().position(|i| i.name == a.ifname) {
                let interface = c.sandbox.interfaces.remove(i);
                let _ = shared.dataplane.remove_endpoint(interface.endpoint);
                let key = crate::gossip::tables::Key {
                    network: interface.network.clone(),
                    table: PEER_TABLE.to_owned(),
                    key: endpoint_key(container),
                };
                let _ = shared.gossip.write(key, None);
            }
        }
        if c.networks.is_empty() {
            if let Some(mut c) = containers.remove(container) {
                c.sandbox.remove(&shared.dataplane, &shared.dns);
            }
        } else {
            shared.dns.set_scope(&c.sandbox.dns_id, c.sandbox.scope());
        }
        drop(containers);
        for a in &gone {
            let detach = Command::DetachContainer {
                container: a.manager_id.clone(),
            };
            if let Err(e) = shared.api.post::<_, Applied>("/v1/commands", &detach) {
                // The address stays allocated until the manager hears of it; said, not hidden.
                tracing::warn!(container, "manager: detach of {}: {e}", a.network);
            }
        }
        Ok(gone)
    }

    /// Every attached container's networks.
    pub fn attachments(&self) -> Vec<Attached> {
        self.shared
            .containers()
            .values()
            .flat_map(|c| c.networks.iter().cloned())
            .collect()
    }
}

/// A container's key in the peer table (task ids and container ids never collide there).
fn endpoint_key(container: &str) -> String {
    format!("container-{container}")
}

fn manager_failure(e: ClientError) -> AttachFailure {
    match e {
        ClientError::Refused { status, message } => failure(status, message),
        other => failure(
            503,
            format!("{other} (attaching needs the manager: it allocates the address)"),
        ),
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
#[allow(clippy::disallowed_methods)] // shell: waits for the view on the wall clock
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Shared {
    fn containers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Container>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
