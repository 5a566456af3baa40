//! What the resolver knows: per network, its services, their tasks and ports, and the
//! standalone containers attached to it. The agent feeds these as [`Update`]s (from the
//! gossip service table); [`Records`] keeps them and rebuilds the lookup index of the one
//! network an update touched.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::index::NetworkIndex;

/// How clients reach a service by its name (Docker's `--endpoint-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// `<service>` answers the service's virtual IP; the balancer picks a task per connection.
    #[default]
    Vip,
    /// `<service>` answers every enabled task's address (DNS round-robin).
    Dnsrr,
}

/// A transport protocol of a service port, for SRV names `_<port>._<proto>.<service>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "_tcp",
            Self::Udp => "_udp",
        }
    }
}

/// A port a service's tasks listen on (`target`), and where the mesh publishes it, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub protocol: PortProtocol,
    pub target: u16,
    #[serde(default)]
    pub published: Option<u16>,
}

/// One task of a service on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's DNS name, `<service>.<slot>.<task-id>` (global: `<service>.<node-id>.<task-id>`).
    pub name: String,
    pub ip: Ipv4Addr,
    /// Running and healthy: it is in `<service>` (dnsrr) and `tasks.<service>`. A disabled task
    /// keeps its own name and PTR (it still exists) but receives no new clients.
    pub enabled: bool,
}

/// A service as seen on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    #[serde(default)]
    pub mode: EndpointMode,
    /// The service's VIP on this network (vip mode).
    #[serde(default)]
    pub vip: Option<Ipv4Addr>,
    /// Network-scoped aliases (`--network name=N,alias=A`): they resolve like the name.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub tasks: Vec<TaskRecord>,
    #[serde(default)]
    pub ports: Vec<PortRecord>,
}

/// A standalone container attached to an (attachable) network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ip: Ipv4Addr,
}

/// A change to the records. Services and containers are replaced whole: the agent sends the
/// current state of one object, so a lost intermediate change cannot leave a mixture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Update {
    /// Creates or changes a network. `internal`: no forwarding for containers on internal
    /// networks only. `ingress`: the routing-mesh network registers no names (as in Docker).
    SetNetwork {
        network: String,
        #[serde(default)]
        internal: bool,
        #[serde(default)]
        ingress: bool,
    },
    RemoveNetwork {
        network: String,
    },
    SetService {
        network: String,
        service: ServiceRecord,
    },
    RemoveService {
        network: String,
        service: String,
    },
    SetContainer {
        network: String,
        container: ContainerRecord,
    },
    RemoveContainer {
        network: String,
        container: String,
    },
}

/// Why an update was refused. The records are unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("network {0:?} is unknown to the resolver: send set_network for it first")]
    UnknownNetwork(String),
    #[error("{kind} name {name:?} on network {network:?} is not a valid DNS name: {why}")]
    BadName {
        network: String,
        kind: &'static str,
        name: String,
        why: &'static str,
    },
}

/// The properties of a network that change how its names are answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkFlags {
    pub internal: bool,
    pub ingress: bool,
}

/// Everything known about one network, by object name.
#[derive(Clone, Debug, Default)]
pub struct NetworkRecords {
    pub flags: NetworkFlags,
    pub services: BTreeMap<String, ServiceRecord>,
    pub containers: BTreeMap<String, ContainerRecord>,
}

/// The source of truth the index is built from, and the index itself.
#[derive(Debug, Default)]
pub struct Records {
    networks: BTreeMap<String, NetworkRecords>,
    indexes: BTreeMap<String, Arc<NetworkIndex>>,
}

impl Records {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one change and rebuilds the index of the network it touched.
    pub fn apply(&mut self, update: Update) -> Result<(), UpdateError> {
        let network = match update {
            Update::SetNetwork {
                network,
                internal,
                ingress,
            } => {
                check_name(&network, "network", &network)?;
                self.networks.entry(network.clone()).or_default().flags =
                    NetworkFlags { internal, ingress };
                network
            }
            Update::RemoveNetwork { network } => {
                self.networks.remove(&network);
                self.indexes.remove(&network);
                return Ok(());
            }
            Update::SetService { network, service } => {
                check_name(&network, "service", &service.name)?;
                for alias in &service.aliases {
                    check_name(&network, "alias", alias)?;
                }
                for task in &service.tasks {
                    check_name(&network, "task", &task.name)?;
                }
                self.network_mut(&network)?
                    .services
                    .insert(service.name.clone(), service);
                network
            }
            Update::RemoveService { network, service } => {
                self.network_mut(&network)?.services.remove(&service);
                network
            }
            Update::SetContainer { network, container } => {
                check_name(&network, "container", &container.name)?;
                for alias in &container.aliases {
                    check_name(&network, "alias", alias)?;
                }
                self.network_mut(&network)?
                    .containers
                    .insert(container.name.clone(), container);
                network
            }
            Update::RemoveContainer { network, container } => {
                self.network_mut(&network)?.containers.remove(&container);
                network
            }
        };
        if let Some(records) = self.networks.get(&network) {
            self.indexes.insert(
                network.clone(),
                Arc::new(NetworkIndex::build(&network, records)),
            );
        }
        Ok(())
    }

    fn network_mut(&mut self, network: &str) -> Result<&mut NetworkRecords, UpdateError> {
        self.networks
            .get_mut(network)
            .ok_or_else(|| UpdateError::UnknownNetwork(network.to_owned()))
    }

    /// The current indexes, cheap to clone and to hand to answering threads.
    pub fn snapshot(&self) -> crate::index::Snapshot {
        crate::index::Snapshot::new(self.indexes.clone())
    }

    pub fn network(&self, network: &str) -> Option<&NetworkRecords> {
        self.networks.get(network)
    }
}

/// A name we register must be one a client can ask for: labels of 1–63 bytes, 253 in all,
/// no empty label. (Letters, digits, `-` and `_` are what Docker's names use; we accept any
/// printable ASCII except `.` inside a label, as DNS itself does.)
fn check_name(network: &str, kind: &'static str, name: &str) -> Result<(), UpdateError> {
    let bad = |why| UpdateError::BadName {
        network: network.to_owned(),
        kind,
        name: name.to_owned(),
        why,
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("it must be 1 to 253 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("it may hold printable ASCII only, no spaces"));
    }
    if name
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err(bad(
            "each dot-separated label must be 1 to 63 characters long",
        ));
    }
    Ok(())
}
