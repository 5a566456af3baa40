//! `shoal agent`: one node, composed. The manager's view says which networks and tasks the
//! node has; the agent programs the dataplane (networks, keys, local endpoints), serves the
//! resolver in every sandbox, runs the tasks, and writes its endpoints into the gossip
//! tables. Everything the other nodes write comes back through gossip ([`watch`]) into the
//! dataplane's remote endpoints and VIPs and the resolver's records — so forwarding,
//! balancing and DNS go on with the last state while the manager is away.
//!
//! Read first: [`Agent::start`], then [`Agent::apply`] (one view), then `tasks.rs` (a task's
//! life on this node).
//!
//! - [`api`]: the local API on a unix socket and its client;
//! - [`attach`]: standalone containers (the local API, `shoal attach`, `shoal-cni`);
//! - [`cni`]: `shoal-cni`'s decisions (CNI 1.0 over the local API);
//! - [`mesh`]: the ingress sandbox and the published ports (the routing mesh);
//! - [`plan`]: a view against the local state, sans-IO: networks, keys, tasks, reports;
//! - [`report`]: status and metrics;
//! - [`sandbox`]: a network namespace with its TAPs and resolver;
//! - `tasks`: starting, restarting, draining and stopping tasks;
//! - [`watch`]: gossip table changes into the dataplane and the resolver.

pub mod api;
pub mod attach;
pub mod cni;
pub mod egress;
pub mod mesh;
pub mod plan;
pub mod report;
pub mod sandbox;
mod tasks;
pub mod watch;

/// The network namespace of a task's sandbox: the agent's prefix and the task id's first 12
/// characters (what `shoal lab exec` and the tests look for).
pub fn sandbox_name(netns_prefix: &str, task: &str) -> String {
    format!("{netns_prefix}-{}", task.get(..12).unwrap_or(task))
}

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use dataplane::balance::Algorithm;
use dataplane::shell::runtime::{Dataplane, DataplaneConfig};
use dataplane::types::{EndpointId, SenderId, Vni};
use dns::shell::DnsServer;

use crate::agent::follower::{self, Identity};
use crate::agent::runtime::{Runtime, RuntimeConfig};
use crate::gossip::netdb;
use crate::gossip::shell::{GossipConfig, GossipNode};
use crate::gossip::wire::keyring::{Key, Keyring};
use crate::manager::Command;
use crate::manager::api::ApiClient;
use crate::manager::keys::KeySet;
use crate::manager::model::TaskState;
use crate::manager::view::{NodeView, ServiceView};

use plan::{LocalNetwork, Phase};
use tasks::LocalTask;

/// Docker's overlay data port.
pub const DATA_PORT: u16 = 4789;
/// Docker's gossip port.
pub const GOSSIP_PORT: u16 = 7946;

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub identity: Identity,
    /// The overlay socket's port (on the node's address).
    pub data_port: u16,
    /// Gossip's port, the same on every node (the seeds are the nodes' addresses).
    pub gossip_port: u16,
    /// Task namespaces are `<prefix>-<task id>`; leftovers with it are removed at start.
    pub netns_prefix: String,
    /// Task files and logs.
    pub state_dir: PathBuf,
    /// How long a stopping task keeps its connections, out of the balancer, before SIGTERM.
    pub drain: Duration,
    /// SIGTERM to SIGKILL.
    pub stop_timeout: Duration,
    pub algorithm: Algorithm,
    /// The program of a task whose service gives no command: `<program> whoami`.
    pub program: PathBuf,
    /// Gossip timings (tests shorten them).
    pub gossip: netdb::Config,
    /// The tasks' way off their overlays (egress.rs); `None`: tasks reach only overlays.
    pub egress: Option<ipnet::Ipv4Net>,
}

impl AgentConfig {
    pub fn new(identity: Identity, program: PathBuf) -> AgentConfig {
        let prefix = format!("shoal-{}", identity.hostname);
        let state_dir = PathBuf::from("/run/shoal/agent").join(&identity.hostname);
        AgentConfig {
            identity,
            data_port: DATA_PORT,
            gossip_port: GOSSIP_PORT,
            netns_prefix: prefix,
            state_dir,
            drain: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(10),
            algorithm: Algorithm::RoundRobin,
            program,
            gossip: netdb::Config::default(),
            egress: egress::DEFAULT_SUBNET.parse().ok(),
        }
    }
}

/// What the agent's threads share.
pub(crate) struct Shared {
    config: AgentConfig,
    /// This node's overlay socket: what its peer entries name.
    overlay: SocketAddr,
    dataplane: Dataplane,
    dns: DnsServer,
    gossip: GossipNode,
    runtime: Runtime,
    api: ApiClient,
    /// Network id → VNI of the networks programmed: the gossip glue's map.
    vnis: RwLock<BTreeMap<String, Vni>>,
    local: Mutex<Local>,
    /// The ingress sandbox and the published ports, once the view gave the ingress address.
    ingress: Mutex<Option<mesh::Ingress>>,
    /// The gossip keyring's epochs and primary, as installed.
    gossip_keys: Mutex<(BTreeSet<u32>, Option<u32>)>,
    /// Attached standalone containers by the runtime's container id.
    containers: Mutex<BTreeMap<String, attach::Container>>,
    next_endpoint: AtomicU32,
    egress: Option<egress::Egress>,
    glue: watch::GlueCounters,
    stop: AtomicBool,
}

/// The node's state as programmed.
#[derive(Default)]
struct Local {
    networks: BTreeMap<String, LocalNetwork>,
    tasks: BTreeMap<String, LocalTask>,
    /// The services of the last view, by id.
    services: BTreeMap<String, ServiceView>,
    revision: u64,
    manager_connected: bool,
}

impl Shared {
    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn vnis(&self) -> BTreeMap<String, Vni> {
        self.vnis.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn endpoint_id(&self) -> EndpointId {
        EndpointId(self.next_endpoint.fetch_add(1, Ordering::Relaxed))
    }

    /// Tells the manager now (best effort: the next view repairs a lost report).
    fn report(&self, task: &str, observed: TaskState, message: String) {
        let command = Command::TaskStatus {
            task: task.to_owned(),
            observed,
            message,
        };
        if let Err(e) = self
            .api
            .post::<_, crate::manager::Applied>("/v1/commands", &command)
        {
            tracing::debug!("report of task {task}: {e}");
        }
    }
}

/// A running agent. Dropping it stops the threads' work (tasks keep running until
/// [`Agent::shutdown`]).
pub struct Agent {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.shared.config.identity.hostname)
            .field("overlay", &self.shared.overlay)
            .finish()
    }
}

/// The gossip keyring of a view: the sending key first, the others accepted.
fn keyring(keys: &KeySet) -> Option<Keyring> {
    let primary = keys
        .tx
        .and_then(|tx| keys.epochs.iter().find(|e| e.epoch == tx))
        .or(keys.epochs.last())?;
    let key = |bytes: &[u8; 32]| Key::new(bytes).ok();
    let mut ring = Keyring::new(key(&primary.key.0)?);
    for e in keys.epochs.iter().filter(|e| e.epoch != primary.epoch) {
        if let Some(k) = key(&e.key.0) {
            ring = ring.with(k);
        }
    }
    Some(ring)
}

impl Agent {
    /// Starts the dataplane, the resolver, gossip (with the keyring of `first`, the first
    /// view) and the runtime, removes what a previous agent of this node left (its task
    /// namespaces and their processes), and applies `first`.
    pub fn start(config: AgentConfig, api: ApiClient, first: &NodeView) -> io::Result<Agent> {
        let addr = config.identity.addr;
        tasks::sweep_leftovers(&config.netns_prefix);
        let egress = config.egress.map(egress::Egress::start).transpose()?;
        let overlay = SocketAddr::from((addr, config.data_port));
        // The node's address is unique in the cluster: a sender id no other node has.
        let sender = SenderId(u32::from(addr));
        let dataplane = Dataplane::start(DataplaneConfig::new(sender, overlay))?;
        let dns = DnsServer::start(dns::DnsConfig::default())?;
        let gossip = GossipNode::start(GossipConfig {
            name: config.identity.id.clone(),
            bind: SocketAddr::from((addr, config.gossip_port)),
            keyring: keyring(&first.gossip_keys),
            config: config.gossip,
        })?;
        let events = gossip.watch();
        let runtime = Runtime::new(RuntimeConfig {
            state_dir: config.state_dir.join("tasks"),
        });
        let task_events = runtime.events();
        let shared = Arc::new(Shared {
            overlay,
            dataplane,
            dns,
            gossip,
            runtime,
            api,
            vnis: RwLock::new(BTreeMap::new()),
            local: Mutex::new(Local::default()),
            containers: Mutex::new(BTreeMap::new()),
            ingress: Mutex::new(None),
            gossip_keys: Mutex::new((
                first.gossip_keys.epochs.iter().map(|e| e.epoch).collect(),
                first.gossip_keys.tx,
            )),
            next_endpoint: AtomicU32::new(1),
            egress,
            glue: watch::GlueCounters::default(),
            stop: AtomicBool::new(false),
            config,
        });
        let glue = shared.clone();
        std::thread::Builder::new()
            .name("agent-tables".into())
            .spawn(move || watch::run(&glue, events))?;
        let runtime_events = shared.clone();
        std::thread::Builder::new()
            .name("agent-tasks".into())
            .spawn(move || tasks::watch_runtime(&runtime_events, task_events))?;
        let agent = Agent { shared };
        agent.apply(first);
        Ok(agent)
    }

    /// Follows the manager until [`Agent::stop`]: every view applied, its reports sent.
    pub fn follow(&self, register_first: bool) {
        let shared = &self.shared;
        follower::follow(
            &shared.api,
            &shared.config.identity,
            register_first,
            &shared.stop,
            |view| self.apply(view),
            |up| shared.local().manager_connected = up,
        );
    }

    /// Stops following (the current long poll ends within its timeout).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Stops every task (drained as on a scale-down, in parallel), leaves gossip.
    pub fn shutdown(&self) {
        self.stop();
        let ids: Vec<String> = self.shared.local().tasks.keys().cloned().collect();
        let stops: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let shared = self.shared.clone();
                std::thread::spawn(move || tasks::stop(&shared, &id))
            })
            .collect();
        for s in stops {
            let _ = s.join();
        }
        mesh::remove(&self.shared);
        if let Some(egress) = &self.shared.egress {
            egress.stop();
        }
        self.shared.gossip.leave();
    }

    /// One view: networks and keys first (so endpoints have a network to land on), then
    /// gossip seeds, then tasks (started and stopped on their own threads). Returns what to
    /// report.
    pub fn apply(&self, view: &NodeView) -> Vec<Command> {
        let shared = &self.shared;
        self.apply_networks(view);
        mesh::reconcile(shared, view);
        self.join_peers(view);
        if let Some(egress) = &shared.egress {
            let mut nodes: BTreeSet<std::net::Ipv4Addr> = view.peers.values().copied().collect();
            nodes.insert(shared.config.identity.addr);
            egress.set_nodes(nodes);
        }
        let (plan, reports) = {
            let mut local = shared.local();
            local.revision = view.revision;
            local.services = view
                .services
                .iter()
                .map(|s| (s.id.clone(), s.clone()))
                .collect();
            let phases: BTreeMap<String, Phase> = local
                .tasks
                .iter()
                .map(|(id, t)| (id.clone(), t.phase))
                .collect();
            let plan = plan::tasks(&phases, view);
            for t in &plan.start {
                local
                    .tasks
                    .insert(t.task.clone(), LocalTask::new(t.clone()));
            }
            for id in &plan.stop {
                if let Some(t) = local.tasks.get_mut(id) {
                    t.phase = Phase::Stopping;
                }
            }
            (plan, plan::task_reports(&phases, view))
        };
        for t in plan.start {
            let shared = shared.clone();
            spawn_named("task-start", move || tasks::start(&shared, &t.task));
        }
        for id in plan.stop {
            let shared = shared.clone();
            spawn_named("task-stop", move || tasks::stop(&shared, &id));
        }
        let mut commands: Vec<Command> = reports
            .into_iter()
            .map(|(task, observed)| Command::TaskStatus {
                task,
                observed,
                message: String::new(),
            })
            .collect();
        // Only the gossip keys the keyring holds are acknowledged: the manager never makes a
        // key primary that this node cannot read.
        let held = self.install_gossip_keys(view);
        commands.extend(follower::key_reports(view).into_iter().filter(|c| match c {
            Command::GossipKeyAck { epoch, .. } => held.contains(epoch),
            _ => true,
        }));
        commands
    }

    /// Installs the view's gossip keyring when its keys or its primary changed (a rotation:
    /// new key accepted, then primary, then the oldest dropped); the epochs held after.
    fn install_gossip_keys(&self, view: &NodeView) -> BTreeSet<u32> {
        let keys = &view.gossip_keys;
        let wanted: (BTreeSet<u32>, Option<u32>) =
            (keys.epochs.iter().map(|e| e.epoch).collect(), keys.tx);
        let mut held = self
            .shared
            .gossip_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *held != wanted
            && let Some(ring) = keyring(keys)
        {
            self.shared.gossip.set_keyring(ring);
            *held = wanted;
        }
        held.0.clone()
    }

    fn apply_networks(&self, view: &NodeView) {
        let shared = &self.shared;
        let mut local = shared.local();
        let dp = &shared.dataplane;
        let plan = plan::networks(&local.networks, &view.networks, |encrypted| {
            dp.overlay_mtu(encrypted) as u16
        });
        for net in &plan.removed {
            shared.gossip.leave_network(&net.id);
            let _ = shared.dns.apply(dns::records::Update::RemoveNetwork {
                network: net.id.clone(),
            });
            lock_write(&shared.vnis).remove(&net.id);
            local.networks.remove(&net.id);
        }
        for (id, update) in plan.dataplane {
            match dp.apply(update) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("network {id}: {e}"),
                Err(e) => tracing::warn!("network {id}: dataplane: {e}"),
            }
        }
        for net in &plan.added {
            if let Some(vni) = plan::vni_of(net) {
                lock_write(&shared.vnis).insert(net.id.clone(), vni);
            }
            let _ = shared.dns.apply(dns::records::Update::SetNetwork {
                network: net.id.clone(),
                internal: net.internal,
                ingress: net.ingress,
            });
            // Last: the entries that arrive now find the network programmed.
            shared.gossip.join_network(&net.id);
        }
        for net in &view.networks {
            local.networks.insert(net.id.clone(), plan::after(net));
        }
    }

    /// Joins the peers gossip does not know as live members yet (a new node, or the first
    /// view): on a thread, since a join may wait on unreachable seeds.
    fn join_peers(&self, view: &NodeView) {
        let known: BTreeSet<String> = self
            .shared
            .gossip
            .members()
            .into_iter()
            .filter(|m| {
                matches!(
                    m.state,
                    crate::gossip::wire::NodeState::Alive | crate::gossip::wire::NodeState::Suspect
                )
            })
            .map(|m| m.name)
            .collect();
        let port = self.shared.config.gossip_port;
        let seeds: Vec<SocketAddr> = view
            .peers
            .iter()
            .filter(|(id, _)| !known.contains(*id))
            .map(|(_, addr)| SocketAddr::from((*addr, port)))
            .collect();
        if seeds.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        spawn_named("gossip-join", move || {
            shared.gossip.join(&seeds);
        });
    }

    /// The node's overlay socket.
    pub fn overlay(&self) -> SocketAddr {
        self.shared.overlay
    }

    /// The node's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.shared.config.identity.addr
    }
}

fn lock_write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// A detached worker thread; a failure to spawn one is logged (the next view retries).
fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::error!("cannot spawn {name}: {e}");
    }
}
