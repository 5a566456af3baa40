//! What can be asked of the manager: every change to its state is one of these, applied
//! whole or not at all, and bumps the revision.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::keys::KeyBytes;
use super::model::{Availability, NetworkSpec, NodeStatus, Role, ServiceSpec, TaskState};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// A node joined (its id comes from its certificate).
    AddNode {
        id: String,
        hostname: String,
        #[serde(default)]
        role: Role,
        addr: Ipv4Addr,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    UpdateNode {
        node: String,
        #[serde(default)]
        availability: Option<Availability>,
        #[serde(default)]
        role: Option<Role>,
        #[serde(default)]
        labels_add: BTreeMap<String, String>,
        #[serde(default)]
        labels_rm: Vec<String>,
    },
    /// The node was heard from again, or has stayed silent past the grace period.
    NodeStatus {
        node: String,
        status: NodeStatus,
    },
    RemoveNode {
        node: String,
    },
    CreateNetwork(NetworkSpec),
    RemoveNetwork {
        network: String,
    },
    CreateService(ServiceSpec),
    UpdateService {
        service: String,
        spec: ServiceSpec,
    },
    ScaleService {
        service: String,
        replicas: u32,
    },
    RemoveService {
        service: String,
    },
    /// An agent reports what became of a task.
    TaskStatus {
        task: String,
        observed: TaskState,
        #[serde(default)]
        message: String,
    },
    /// A standalone container joins an attachable network (the agent's attach API, CNI).
    AttachContainer {
        network: String,
        name: String,
        node: String,
    },
    /// A new key for an encrypted network (the caller draws the bytes): received first,
    /// sent with once every attached node has acknowledged it.
    RotateKey {
        network: String,
        key: KeyBytes,
    },
    /// A node holds a key epoch of a network.
    KeyAck {
        node: String,
        network: String,
        epoch: u32,
    },
    /// A new key for the cluster's gossip keyring (memberlist's AES key): every node gets it
    /// for receiving, it becomes the primary once every ready node acknowledged it.
    RotateGossipKey {
        key: KeyBytes,
    },
    /// A node holds a gossip key epoch.
    GossipKeyAck {
        node: String,
        epoch: u32,
    },
    DetachContainer {
        container: String,
    },
}

/// What an applied command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The id of what it created, if anything.
    pub id: Option<String>,
    /// An address it gave (a container's).
    pub address: Option<Ipv4Addr>,
    /// The state's revision after it.
    pub revision: u64,
}
