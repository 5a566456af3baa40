//! What one node is told: the networks it is attached to (with their keys: keys reach only
//! those nodes), its own tasks, and the services on its networks with their VIPs and task
//! addresses. The manager's stream sends this to the node's agent; the agent realises it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use super::model::{EndpointMode, PortSpec, ServiceSpec, TaskState};
use super::state::State;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub vni: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub internal: bool,
    pub ingress: bool,
    /// Encrypted networks only.
    pub keys: Option<KeySet>,
}

/// A task of a service on one of the node's networks (its own or another node's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub task: String,
    /// The service's id.
    #[serde(default)]
    pub service: String,
    pub name: String,
    pub node: String,
    /// The node's underlay address (where its overlay traffic goes).
    pub node_addr: Ipv4Addr,
    pub addresses: BTreeMap<String, Ipv4Addr>,
    pub desired: TaskState,
    pub observed: TaskState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub id: String,
    pub spec: ServiceSpec,
    pub endpoint_mode: EndpointMode,
    pub vips: BTreeMap<String, Ipv4Addr>,
    pub ports: Vec<PortSpec>,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub revision: u64,
    pub node: String,
    pub networks: Vec<NetworkView>,
    /// The tasks this node runs (or stops).
    pub tasks: Vec<EndpointView>,
    pub services: Vec<ServiceView>,
    /// The cluster's gossip keyring.
    pub gossip_keys: KeySet,
    /// Every other node's underlay address: where its gossip and overlay sockets are (the
    /// gossip seeds; a node the manager holds down is listed too, gossip decides).
    #[serde(default)]
    pub peers: BTreeMap<String, Ipv4Addr>,
    /// This node's address on the ingress network: its ingress sandbox, where the routing
    /// mesh relays published ports from.
    #[serde(default)]
    pub ingress_ip: Option<Ipv4Addr>,
}

impl State {
    /// The networks `node` is attached to: those of the tasks it runs and the containers it
    /// hosts, and the ingress network (every node has its sandbox there).
    pub fn attached_networks(&self, node: &str) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self
            .tasks
            .values()
            .filter(|t| t.node.as_deref() == Some(node) && !t.addresses.is_empty())
            .flat_map(|t| t.addresses.keys().cloned())
            .collect();
        ids.extend(
            self.containers
                .values()
                .filter(|c| c.node == node)
                .map(|c| c.network.clone()),
        );
        ids.extend(
            self.networks
                .values()
                .filter(|n| n.ingress)
                .map(|n| n.id.clone()),
        );
        ids
    }

    /// The nodes attached to a network (the ones its keys go to).
    pub fn attached_nodes(&self, network: &str) -> BTreeSet<String> {
        self.nodes
            .keys()
            .filter(|n| self.attached_networks(n).contains(network))
            .cloned()
            .collect()
    }

    pub fn node_view(&self, node: &str) -> NodeView {
        let attached = self.attached_networks(node);
        let networks = attached
            .iter()
            .filter_map(|id| self.networks.get(id))
            .map(|n| NetworkView {
                id: n.id.clone(),
                name: n.spec.name.clone(),
                vni: n.vni,
                subnet: n.subnet,
                gateway: n.gateway,
                internal: n.spec.internal,
                ingress: n.ingress,
                keys: n
                    .spec
                    .encrypted
                    .then(|| self.keys.get(&n.id).cloned().unwrap_or_default()),
            })
            .collect();
        let endpoint = |t: &super::model::Task| {
            let service_name = self
                .services
                .get(&t.service)
                .map_or("", |s| s.spec.name.as_str());
            let node = t.node.clone().unwrap_or_default();
            EndpointView {
                task: t.id.clone(),
                service: t.service.clone(),
                name: t.name(service_name),
                node_addr: self
                    .nodes
                    .get(&node)
                    .map_or(Ipv4Addr::UNSPECIFIED, |n| n.addr),
                node,
                addresses: t.addresses.clone(),
                desired: t.desired,
                observed: t.observed,
            }
        };
        let tasks = self
            .tasks
            .values()
            .filter(|t| t.node.as_deref() == Some(node))
            .map(endpoint)
            .collect();
        let services = self
            .services
            .values()
            .filter(|s| {
                s.vips.keys().any(|n| attached.contains(n))
                    || self.tasks.values().any(|t| {
                        t.service == s.id
                            && (t.addresses.keys().any(|n| attached.contains(n))
                                // The node runs it: it needs the spec (command, health, ...).
                                || t.node.as_deref() == Some(node))
                    })
            })
            .map(|s| ServiceView {
                id: s.id.clone(),
                spec: s.spec.clone(),
                endpoint_mode: s.spec.endpoint_mode,
                vips: s
                    .vips
                    .iter()
                    .filter(|(n, _)| attached.contains(*n))
                    .map(|(n, ip)| (n.clone(), *ip))
                    .collect(),
                ports: s.ports.clone(),
                endpoints: self
                    .tasks
                    .values()
                    .filter(|t| t.service == s.id && !t.addresses.is_empty())
                    .map(endpoint)
                    .collect(),
            })
            .collect();
        NodeView {
            revision: self.revision,
            node: node.to_owned(),
            networks,
            tasks,
            services,
            gossip_keys: self.gossip_keys.clone(),
            ingress_ip: self.nodes.get(node).and_then(|n| n.ingress_ip),
            peers: self
                .nodes
                .values()
                .filter(|n| n.id != node)
                .map(|n| (n.id.clone(), n.addr))
                .collect(),
        }
    }
}
