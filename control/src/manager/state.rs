//! The manager's state and the one way it changes: [`State::apply`] runs a command on a copy,
//! reconciles (scheduling, restarts, address bookkeeping) and swaps the copy in only if
//! everything succeeded, so a refused command changes nothing. Sans-IO and deterministic:
//! ids come from a counter, never from a clock or a random source.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::command::{Applied, Command};
use super::error::ManagerError;
use super::ipam::{Ipam, PoolConfig};
use super::keys::Keys;
use super::model::{
    EndpointMode, Network, NetworkSpec, Node, NodeStatus, PublishMode, RestartCondition, Role,
    Service, ServiceMode, ServiceSpec, Task, TaskState,
};
use super::schedule;

/// The routing mesh's network, created at init.
pub const INGRESS: &str = "ingress";
/// Finished tasks kept per slot (or per node, for global services) for `service ps`.
const HISTORY: usize = 5;

/// Where a finished task belongs in `service ps` history: its service and its slot (or, for
/// a global service, its node).
type HistoryKey = (String, Option<u32>, Option<String>);

/// A standalone container attached to a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// The node whose agent attached it.
    pub node: String,
    pub network: String,
    pub address: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub revision: u64,
    next_id: u64,
    pub ipam: Ipam,
    pub nodes: BTreeMap<String, Node>,
    pub networks: BTreeMap<String, Network>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    pub containers: BTreeMap<String, Container>,
    /// Key sets of the encrypted networks, by network id.
    pub keys: Keys,
    /// The cluster's gossip keyring (all nodes hold it).
    #[serde(default)]
    pub gossip_keys: super::keys::KeySet,
}

impl State {
    /// A new cluster: the address pool and the ingress network.
    pub fn init(pool: PoolConfig) -> Result<State, ManagerError> {
        let ingress_subnet = pool.ingress;
        let mut state = State {
            revision: 0,
            next_id: 0,
            ipam: Ipam::new(pool),
            nodes: BTreeMap::new(),
            networks: BTreeMap::new(),
            services: BTreeMap::new(),
            tasks: BTreeMap::new(),
            containers: BTreeMap::new(),
            keys: Keys::new(),
            gossip_keys: Default::default(),
        };
        let spec = NetworkSpec {
            name: INGRESS.into(),
            subnet: Some(ingress_subnet),
            ..NetworkSpec::default()
        };
        state.create_network(spec, true)?;
        state.revision = 1;
        Ok(state)
    }

    /// Applies `command` whole, or returns why not and changes nothing.
    pub fn apply(&mut self, command: Command) -> Result<Applied, ManagerError> {
        let mut next = self.clone();
        let target = next.target_service(&command);
        let mut applied = next.execute(command)?;
        let failures = next.reconcile();
        // An allocation that fails for the service this command is about fails the command
        // (`service create` with more replicas than addresses says so); for other services
        // the tasks wait, pending, with the reason.
        let target = target.or_else(|| applied.id.clone());
        if let Some((_, error)) = failures
            .into_iter()
            .find(|(service, _)| Some(service) == target.as_ref())
        {
            return Err(error);
        }
        next.revision += 1;
        applied.revision = next.revision;
        *self = next;
        Ok(applied)
    }

    fn target_service(&self, command: &Command) -> Option<String> {
        match command {
            Command::UpdateService { service, .. } | Command::ScaleService { service, .. } => {
                self.service(service).ok().map(|s| s.id.clone())
            }
            _ => None,
        }
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        scrambled_id(self.next_id)
    }

    // ---- lookups by name or id --------------------------------------------------------

    pub fn network(&self, name_or_id: &str) -> Result<&Network, ManagerError> {
        find(&self.networks, name_or_id, |n| &n.spec.name, "network")
    }

    pub fn service(&self, name_or_id: &str) -> Result<&Service, ManagerError> {
        find(&self.services, name_or_id, |s| &s.spec.name, "service")
    }

    pub fn node(&self, hostname_or_id: &str) -> Result<&Node, ManagerError> {
        find(&self.nodes, hostname_or_id, |n| &n.hostname, "node")
    }

    /// The tasks of a service, oldest first.
    pub fn tasks_of(&self, service_id: &str) -> Vec<&Task> {
        let mut tasks: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.service == service_id)
            .collect();
        tasks.sort_by_key(|t| t.seq);
        tasks
    }

    // ---- commands ---------------------------------------------------------------------

    fn execute(&mut self, command: Command) -> Result<Applied, ManagerError> {
        let mut applied = Applied::default();
        match command {
            Command::AddNode {
                id,
                hostname,
                role,
                addr,
                labels,
            } => {
                check_name("node", &hostname)?;
                if self.nodes.contains_key(&id) {
                    return Err(ManagerError::Exists {
                        kind: "node",
                        name: id,
                    });
                }
                let ingress = self.network(INGRESS)?.id.clone();
                let ingress_ip = Some(self.ipam.allocate(&ingress, INGRESS)?);
                let node = Node {
                    id: id.clone(),
                    hostname,
                    role,
                    availability: Default::default(),
                    labels,
                    addr,
                    status: NodeStatus::Ready,
                    ingress_ip,
                };
                self.nodes.insert(id.clone(), node);
                applied.id = Some(id);
            }
            Command::UpdateNode {
                node,
                availability,
                role,
                labels_add,
                labels_rm,
            } => {
                let id = self.node(&node)?.id.clone();
                let node = self.nodes.get_mut(&id).ok_or(ManagerError::NotFound {
                    kind: "node",
                    name: id.clone(),
                })?;
                if let Some(a) = availability {
                    node.availability = a;
                }
                if let Some(r) = role {
                    node.role = r;
                }
                for key in labels_rm {
                    node.labels.remove(&key);
                }
                node.labels.extend(labels_add);
            }
            Command::NodeStatus { node, status } => {
                let id = self.node(&node)?.id.clone();
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.status = status;
                }
            }
            Command::RemoveNode { node } => {
                let node = self.node(&node)?.clone();
                if node.role == Role::Manager {
                    return Err(ManagerError::RemoveManager {
                        node: node.hostname,
                    });
                }
                if let (Some(ip), Ok(ingress)) = (node.ingress_ip, self.network(INGRESS)) {
                    let ingress = ingress.id.clone();
                    self.ipam.release(&ingress, ip);
                }
                self.nodes.remove(&node.id);
            }
            Command::CreateNetwork(spec) => {
                applied.id = Some(self.create_network(spec, false)?);
            }
            Command::RemoveNetwork { network } => self.remove_network(&network)?,
            Command::CreateService(spec) => applied.id = Some(self.create_service(spec)?),
            Command::UpdateService { service, spec } => self.update_service(&service, spec)?,
            Command::ScaleService { service, replicas } => {
                let service = self.service(&service)?.clone();
                let ServiceMode::Replicated { .. } = service.spec.mode else {
                    return Err(ManagerError::ScaleGlobal {
                        service: service.spec.name,
                    });
                };
                if let Some(s) = self.services.get_mut(&service.id) {
                    s.spec.mode = ServiceMode::Replicated { replicas };
                    s.version += 1;
                }
            }
            Command::RemoveService { service } => {
                let service = self.service(&service)?.clone();
                self.release_service(&service);
                self.services.remove(&service.id);
                for task in self.tasks.values_mut().filter(|t| t.service == service.id) {
                    task.desired = TaskState::Shutdown;
                }
            }
            Command::TaskStatus {
                task,
                observed,
                message,
            } => {
                let task = self.tasks.get_mut(&task).ok_or(ManagerError::NotFound {
                    kind: "task",
                    name: task,
                })?;
                task.observed = observed;
                task.message = message;
            }
            Command::AttachContainer {
                network,
                name,
                node,
            } => {
                check_name("container", &name)?;
                let node = self.node(&node)?.id.clone();
                let net = self.network(&network)?.clone();
                if net.ingress {
                    return Err(ManagerError::IngressAttach {
                        network: net.spec.name,
                    });
                }
                if !net.spec.attachable {
                    return Err(ManagerError::NotAttachable {
                        network: net.spec.name,
                    });
                }
                if self
                    .containers
                    .values()
                    .any(|c| c.name == name && c.network == net.id)
                {
                    return Err(ManagerError::Exists {
                        kind: "container",
                        name,
                    });
                }
                let address = self.ipam.allocate(&net.id, &net.spec.name)?;
                let id = self.new_id();
                let container = Container {
                    id: id.clone(),
                    name,
                    node,
                    network: net.id,
                    address,
                };
                self.containers.insert(id.clone(), container);
                applied.id = Some(id);
                applied.address = Some(address);
            }
            Command::RotateGossipKey { key } => {
                self.gossip_keys.rotate(key);
            }
            Command::GossipKeyAck { node, epoch } => {
                let node = self.node(&node)?.id.clone();
                self.gossip_keys.ack(&node, epoch);
            }
            Command::RotateKey { network, key } => {
                let net = self.network(&network)?.clone();
                if !net.spec.encrypted {
                    return Err(ManagerError::NotEncrypted {
                        network: net.spec.name,
                    });
                }
                self.keys.entry(net.id).or_default().rotate(key);
            }
            Command::KeyAck {
                node,
                network,
                epoch,
            } => {
                let node = self.node(&node)?.id.clone();
                let net = self.network(&network)?.id.clone();
                if let Some(keys) = self.keys.get_mut(&net) {
                    keys.ack(&node, epoch);
                }
            }
            Command::DetachContainer { container } => {
                let c = self
                    .containers
                    .remove(&container)
                    .ok_or(ManagerError::NotFound {
                        kind: "container",
                        name: container,
                    })?;
                self.ipam.release(&c.network, c.address);
            }
        }
        Ok(applied)
    }

    fn create_network(&mut self, spec: NetworkSpec, ingress: bool) -> Result<String, ManagerError> {
        check_name("network", &spec.name)?;
        if self.network(&spec.name).is_ok() {
            return Err(ManagerError::Exists {
                kind: "network",
                name: spec.name,
            });
        }
        let id = self.new_id();
        let (subnet, gateway) = self.ipam.add_network(&id, &spec.name, spec.subnet)?;
        let vni = self.ipam.allocate_vni()?;
        let network = Network {
            id: id.clone(),
            spec: NetworkSpec {
                subnet: Some(subnet),
                ..spec
            },
            vni,
            subnet,
            gateway,
            ingress,
        };
        self.networks.insert(id.clone(), network);
        Ok(id)
    }

    fn remove_network(&mut self, name: &str) -> Result<(), ManagerError> {
        let net = self.network(name)?.clone();
        if net.ingress {
            return Err(ManagerError::IngressAttach {
                network: net.spec.name,
            });
        }
        let users: Vec<String> = self
            .services
            .values()
            .filter(|s| {
                s.spec
                    .networks
                    .iter()
                    .any(|a| self.network(&a.network).is_ok_and(|n| n.id == net.id))
            })
            .map(|s| s.spec.name.clone())
            .chain(
                self.containers
                    .values()
                    .filter(|c| c.network == net.id)
                    .map(|c| c.name.clone()),
            )
            .collect();
        if !users.is_empty() {
            return Err(ManagerError::NetworkInUse {
                network: net.spec.name,
                services: users,
            });
        }
        self.ipam.remove_network(&net.id);
        self.ipam.release_vni(net.vni);
        self.networks.remove(&net.id);
        Ok(())
    }

    /// Checks a spec against the cluster: names, networks (never ingress), dnsrr and ingress
    /// ports.
    fn check_spec(&self, spec: &ServiceSpec) -> Result<(), ManagerError> {
        check_name("service", &spec.name)?;
        for attachment in &spec.networks {
            let net = self.network(&attachment.network)?;
            if net.ingress {
                return Err(ManagerError::IngressAttach {
                    network: net.spec.name.clone(),
                });
            }
            for alias in &attachment.aliases {
                check_name("alias", alias)?;
            }
        }
        let ingress_ports = spec.ports.iter().any(|p| p.mode == PublishMode::Ingress);
        if spec.endpoint_mode == EndpointMode::Dnsrr && ingress_ports {
            return Err(ManagerError::DnsrrIngress {
                service: spec.name.clone(),
            });
        }
        Ok(())
    }

    fn create_service(&mut self, spec: ServiceSpec) -> Result<String, ManagerError> {
        self.check_spec(&spec)?;
        if self.service(&spec.name).is_ok() {
            return Err(ManagerError::Exists {
                kind: "service",
                name: spec.name,
            });
        }
        let id = self.new_id();
        let mut service = Service {
            id: id.clone(),
            spec,
            vips: BTreeMap::new(),
            ports: Vec::new(),
            version: 1,
        };
        self.allocate_service(&mut service)?;
        self.services.insert(id.clone(), service);
        Ok(id)
    }

    /// VIPs (vip mode: one per network, and one on ingress when a port is published through
    /// the mesh) and published ports.
    fn allocate_service(&mut self, service: &mut Service) -> Result<(), ManagerError> {
        let name = service.spec.name.clone();
        for port in &service.spec.ports {
            let mut port = *port;
            port.published = Some(
                self.ipam
                    .allocate_port(&name, port.protocol, port.published)?,
            );
            service.ports.push(port);
        }
        if service.spec.endpoint_mode == EndpointMode::Vip {
            for network_id in self.network_ids(&service.spec)? {
                let net_name = self
                    .networks
                    .get(&network_id)
                    .map(|n| n.spec.name.clone())
                    .unwrap_or_default();
                let vip = self.ipam.allocate(&network_id, &net_name)?;
                service.vips.insert(network_id, vip);
            }
        }
        Ok(())
    }

    fn release_service(&mut self, service: &Service) {
        for port in &service.ports {
            if let Some(published) = port.published {
                self.ipam.release_port(port.protocol, published);
            }
        }
        for (network, vip) in &service.vips {
            self.ipam.release(network, *vip);
        }
    }

    /// The ids of the networks a service's tasks are on: its own, and ingress when it
    /// publishes a port through the mesh.
    fn network_ids(&self, spec: &ServiceSpec) -> Result<Vec<String>, ManagerError> {
        let mut ids = Vec::new();
        for attachment in &spec.networks {
            ids.push(self.network(&attachment.network)?.id.clone());
        }
        if spec.ports.iter().any(|p| p.mode == PublishMode::Ingress) {
            ids.push(self.network(INGRESS)?.id.clone());
        }
        Ok(ids)
    }

    fn update_service(&mut self, name: &str, spec: ServiceSpec) -> Result<(), ManagerError> {
        let old = self.service(name)?.clone();
        self.check_spec(&spec)?;
        if spec.name != old.spec.name && self.service(&spec.name).is_ok() {
            return Err(ManagerError::Exists {
                kind: "service",
                name: spec.name,
            });
        }
        let only_scale = ServiceSpec {
            mode: old.spec.mode,
            ..spec.clone()
        } == old.spec;
        self.release_service(&old);
        let mut service = Service {
            spec,
            vips: BTreeMap::new(),
            ports: Vec::new(),
            version: old.version + 1,
            ..old
        };
        self.allocate_service(&mut service)?;
        if !only_scale {
            // A new spec means new tasks: the old ones stop, their slots are filled again.
            for task in self.tasks.values_mut().filter(|t| t.service == service.id) {
                task.desired = TaskState::Shutdown;
            }
        }
        self.services.insert(service.id.clone(), service);
        Ok(())
    }

    // ---- reconciliation ---------------------------------------------------------------

    /// Brings tasks in line with services and nodes. Returns the allocation failures per
    /// service id (their tasks stay pending with the reason).
    fn reconcile(&mut self) -> Vec<(String, ManagerError)> {
        let mut failures = Vec::new();
        self.retire_tasks();
        let services: Vec<Service> = self.services.values().cloned().collect();
        for service in &services {
            self.stop_misplaced(service);
            let result = match service.spec.mode {
                ServiceMode::Replicated { replicas } => self.fill_slots(service, replicas),
                ServiceMode::Global => self.fill_nodes(service),
            };
            if let Err(e) = result.and_then(|()| self.place_pending(service)) {
                failures.push((service.id.clone(), e));
            }
        }
        self.retire_tasks();
        self.prune_history();
        self.settle_keys();
        failures
    }

    /// Moves each key rotation on once every attached node holds the new key. (A network with
    /// no node attached yet switches at once: nobody could miss a frame.)
    fn settle_keys(&mut self) {
        let ready: std::collections::BTreeSet<String> = self
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Ready)
            .map(|n| n.id.clone())
            .collect();
        self.gossip_keys.settle(&ready);
        let ids: Vec<String> = self.keys.keys().cloned().collect();
        for id in ids {
            let attached = self.attached_nodes(&id);
            if let Some(keys) = self.keys.get_mut(&id) {
                keys.settle(&attached);
            }
        }
    }

    /// Tasks on nodes that may not keep them (drained, down, constraints no longer met) stop;
    /// their slots are filled elsewhere.
    fn stop_misplaced(&mut self, service: &Service) {
        let nodes = &self.nodes;
        for task in self
            .tasks
            .values_mut()
            .filter(|t| t.service == service.id && t.is_live())
        {
            let Some(node) = task.node.as_ref() else {
                continue;
            };
            if !nodes
                .get(node)
                .is_some_and(|n| schedule::may_keep(n, &service.spec))
            {
                task.desired = TaskState::Shutdown;
                task.message = "moved: its node is drained, down or no longer matches".into();
            }
        }
    }

    /// Replicated: one live task per slot 1..=replicas (restarting failed ones by policy),
    /// none above.
    fn fill_slots(&mut self, service: &Service, replicas: u32) -> Result<(), ManagerError> {
        for task in self.tasks.values_mut() {
            if task.service == service.id
                && task.is_live()
                && task.slot.is_some_and(|s| s > replicas)
            {
                task.desired = TaskState::Shutdown;
            }
        }
        for slot in 1..=replicas {
            let history: Vec<&Task> = self
                .tasks
                .values()
                .filter(|t| t.service == service.id && t.slot == Some(slot))
                .collect();
            if history.iter().any(|t| t.is_live()) {
                continue;
            }
            let last = history.iter().max_by_key(|t| t.seq).map(|t| (*t).clone());
            if let Some(restarts) = restart_count(service, last.as_ref()) {
                self.new_task(service, Some(slot), None, restarts);
            }
        }
        Ok(())
    }

    /// Global: one live task on every node that may take one.
    fn fill_nodes(&mut self, service: &Service) -> Result<(), ManagerError> {
        let nodes: Vec<String> = self
            .nodes
            .values()
            .filter(|n| schedule::may_take(n, &service.spec))
            .map(|n| n.id.clone())
            .collect();
        for node in nodes {
            let history: Vec<&Task> = self
                .tasks
                .values()
                .filter(|t| t.service == service.id && t.node.as_deref() == Some(&node))
                .collect();
            if history.iter().any(|t| t.is_live()) {
                continue;
            }
            let last = history.iter().max_by_key(|t| t.seq).map(|t| (*t).clone());
            if let Some(restarts) = restart_count(service, last.as_ref()) {
                self.new_task(service, None, Some(node), restarts);
            }
        }
        Ok(())
    }

    fn new_task(
        &mut self,
        service: &Service,
        slot: Option<u32>,
        node: Option<String>,
        restarts: u32,
    ) {
        let id = self.new_id();
        let task = Task {
            id: id.clone(),
            seq: self.next_id,
            service: service.id.clone(),
            slot,
            node,
            desired: TaskState::Running,
            observed: TaskState::Pending,
            addresses: BTreeMap::new(),
            message: String::new(),
            restarts,
        };
        self.tasks.insert(id, task);
    }

    /// Gives unplaced live tasks a node and their addresses; a global task already has its
    /// node and only needs addresses.
    fn place_pending(&mut self, service: &Service) -> Result<(), ManagerError> {
        let mut pending: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.service == service.id && t.is_live() && t.observed == TaskState::Pending)
            .map(|t| t.id.clone())
            .collect();
        pending.sort_by_key(|id| self.tasks.get(id).map(|t| t.seq));
        let networks = self.network_ids(&service.spec)?;
        for id in pending {
            let node = match self.tasks.get(&id).and_then(|t| t.node.clone()) {
                Some(node) => node,
                None => {
                    match schedule::choose(&self.nodes, &self.tasks, &service.id, &service.spec) {
                        Some(node) => node.id.clone(),
                        None => {
                            let why = schedule::why_unplaced(&self.nodes, &service.spec);
                            if let Some(task) = self.tasks.get_mut(&id) {
                                task.message = why;
                            }
                            continue;
                        }
                    }
                }
            };
            let mut addresses = BTreeMap::new();
            for network in &networks {
                let name = self
                    .networks
                    .get(network)
                    .map(|n| n.spec.name.clone())
                    .unwrap_or_default();
                match self.ipam.allocate(network, &name) {
                    Ok(ip) => {
                        addresses.insert(network.clone(), ip);
                    }
                    Err(e) => {
                        for (network, ip) in addresses {
                            self.ipam.release(&network, ip);
                        }
                        if let Some(task) = self.tasks.get_mut(&id) {
                            task.message = e.to_string();
                        }
                        return Err(e);
                    }
                }
            }
            if let Some(task) = self.tasks.get_mut(&id) {
                task.node = Some(node);
                task.addresses = addresses;
                task.observed = TaskState::Assigned;
                task.message.clear();
            }
        }
        Ok(())
    }

    /// A task that is to stop and has stopped (or never ran, or whose node is gone) gives its
    /// addresses back. A failed task whose desire was to run is stopped here too.
    fn retire_tasks(&mut self) {
        let mut released = Vec::new();
        for task in self.tasks.values_mut() {
            if task.observed == TaskState::Failed || task.observed == TaskState::Complete {
                task.desired = TaskState::Shutdown;
            }
            let node_gone = task.node.as_ref().is_none_or(|n| {
                self.nodes
                    .get(n)
                    .is_none_or(|n| n.status == NodeStatus::Down)
            });
            let stopped =
                task.observed.is_terminal() || task.observed == TaskState::Pending || node_gone;
            if task.desired == TaskState::Shutdown && stopped && !task.addresses.is_empty() {
                released.extend(std::mem::take(&mut task.addresses));
            }
        }
        for (network, ip) in released {
            self.ipam.release(&network, ip);
        }
    }

    /// Keeps the last few finished tasks of each slot (or node), as `service ps` shows them.
    fn prune_history(&mut self) {
        let mut finished: BTreeMap<HistoryKey, Vec<(u64, String)>> = BTreeMap::new();
        for task in self.tasks.values() {
            if !task.is_live() && task.addresses.is_empty() {
                let key = (
                    task.service.clone(),
                    task.slot,
                    if task.slot.is_none() {
                        task.node.clone()
                    } else {
                        None
                    },
                );
                finished
                    .entry(key)
                    .or_default()
                    .push((task.seq, task.id.clone()));
            }
        }
        for (_, mut tasks) in finished {
            tasks.sort();
            let excess = tasks.len().saturating_sub(HISTORY);
            for (_, id) in tasks.into_iter().take(excess) {
                self.tasks.remove(&id);
            }
        }
        let services = &self.services;
        self.tasks
            .retain(|_, t| services.contains_key(&t.service) || !t.addresses.is_empty());
    }
}

/// Whether a slot whose last task is `last` gets a new task, and its restart count.
fn restart_count(service: &Service, last: Option<&Task>) -> Option<u32> {
    let Some(last) = last else { return Some(0) };
    // Moved or scaled away, or the spec changed: not a restart.
    if !last.observed.is_terminal() || last.observed == TaskState::Shutdown {
        return Some(last.restarts);
    }
    let policy = service.spec.restart;
    let again = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => last.observed == TaskState::Failed,
        RestartCondition::Any => true,
    };
    let within = policy.max_attempts.is_none_or(|max| last.restarts < max);
    (again && within).then_some(last.restarts + 1)
}

fn find<'a, T>(
    map: &'a BTreeMap<String, T>,
    name_or_id: &str,
    name_of: impl Fn(&T) -> &String,
    kind: &'static str,
) -> Result<&'a T, ManagerError> {
    map.get(name_or_id)
        .or_else(|| map.values().find(|v| name_of(v) == name_or_id))
        .ok_or_else(|| ManagerError::NotFound {
            kind,
            name: name_or_id.to_owned(),
        })
}

/// Docker's object names: a letter or digit, then letters, digits, `-`, `_` or `.`; 63 at most.
fn check_name(kind: &'static str, name: &str) -> Result<(), ManagerError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(ManagerError::BadName {
            kind,
            name: name.to_owned(),
        })
    }
}

/// A 10-character id that looks random but is the counter `n` scrambled by a bijection of
/// [0, 36^10): unique, repeatable, and no clock or random source in the core.
fn scrambled_id(n: u64) -> String {
    const SPACE: u128 = 3_656_158_440_062_976; // 36^10
    // Odd and not a multiple of 3: coprime with 36^10, so n -> n * K mod 36^10 is a bijection.
    const K: u128 = 2_259_630_184_031_291; // about 0.618 × 36^10: neighbours land far apart
    let mut x = (u128::from(n) * K) % SPACE;
    let mut out = [b'0'; 10];
    for slot in out.iter_mut().rev() {
        let digit = (x % 36) as u8;
        *slot = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        x /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}
