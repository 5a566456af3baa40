//! The manager's objects: nodes, networks, services and tasks, as the store holds them.
//! Specs are what users ask for; the rest (ids, VNIs, subnets, VIPs, addresses, placement) is
//! what the manager decided.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::constraint::Constraint;

/// A node's role in the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    #[default]
    Worker,
}

/// Whether a node takes tasks (Docker's `--availability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks move away; takes none.
    Drain,
}

/// Whether the manager hears from the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    #[default]
    Ready,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    /// Where the node's agent is reached on the underlay (overlay and gossip traffic).
    pub addr: Ipv4Addr,
    pub status: NodeStatus,
    /// The node's address on the ingress network (its ingress sandbox, for the routing mesh).
    pub ingress_ip: Option<Ipv4Addr>,
}

/// What `network create` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    /// A subnet of the user's choice; otherwise the next free one of the pool.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// Standalone containers may join it (never the ingress network).
    #[serde(default)]
    pub attachable: bool,
    /// No way out: its containers get no upstream DNS and no egress.
    #[serde(default)]
    pub internal: bool,
    /// Sealed VXLAN with a rotated key set.
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub spec: NetworkSpec,
    pub vni: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The routing mesh's network, created at init.
    pub ingress: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every node, through the routing mesh.
    #[default]
    Ingress,
    /// Only where a task runs, straight to it.
    Host,
}

/// A port of a service (`--publish [mode=host,]P:T[/udp]`, or a target port alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub target: u16,
    /// `None`: the next free port of the range is given (ingress mode).
    #[serde(default)]
    pub published: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PublishMode,
}

/// A network a service is on, with its aliases there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum ServiceMode {
    Replicated {
        replicas: u32,
    },
    /// One task on every eligible node.
    Global,
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    #[serde(default)]
    pub condition: RestartCondition,
    /// Restarts allowed before giving up; `None`: no limit.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// A health check: a command run in the task's namespaces, or a TCP connect to a port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    Command {
        command: Vec<String>,
        interval_ms: u64,
        retries: u32,
    },
    Tcp {
        port: u16,
        interval_ms: u64,
        retries: u32,
    },
}

/// What `service create` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub mode: ServiceMode,
    #[serde(default)]
    pub networks: Vec<Attachment>,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// The task program and its environment (process runtime); empty: the probe server.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// TCP ports the tasks listen on without publishing them (compose `expose`): the probe
    /// server listens there too, and `lab matrix` tries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub spec: ServiceSpec,
    /// The VIP per network id (vip mode; the ingress network too when ports are published).
    pub vips: BTreeMap<String, Ipv4Addr>,
    /// The ports with their published port decided.
    pub ports: Vec<PortSpec>,
    /// Bumped by every change of the spec.
    pub version: u64,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    Pending,
    Assigned,
    Running,
    /// Desired: stop it (scaled down, moved, service removed).
    Shutdown,
    Complete,
    Failed,
}

impl TaskState {
    /// A task in this observed state holds no resources any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Shutdown | TaskState::Complete | TaskState::Failed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    /// Creation order (ids look random; this does not).
    pub seq: u64,
    pub service: String,
    /// The replica number (replicated) — global tasks have none, they are per node.
    pub slot: Option<u32>,
    pub node: Option<String>,
    pub desired: TaskState,
    pub observed: TaskState,
    /// The task's address per network id.
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// Why the task is pending or failed, for `service ps`.
    pub message: String,
    /// How many times this slot was restarted.
    pub restarts: u32,
}

impl Task {
    /// Docker's task name: `<service>.<slot>.<task-id>`, or `<service>.<node-id>.<task-id>`.
    pub fn name(&self, service_name: &str) -> String {
        match (self.slot, &self.node) {
            (Some(slot), _) => format!("{service_name}.{slot}.{}", self.id),
            (None, Some(node)) => format!("{service_name}.{node}.{}", self.id),
            (None, None) => format!("{service_name}.{}", self.id),
        }
    }

    /// Wanted and not yet finished: it counts toward the service's replicas.
    pub fn is_live(&self) -> bool {
        self.desired != TaskState::Shutdown && !self.observed.is_terminal()
    }
}
