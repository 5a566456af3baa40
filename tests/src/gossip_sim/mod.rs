//! A deterministic simulator of the gossip core (issue 3): many [`NetDb`]s on a virtual
//! network with a virtual clock, driven as a discrete-event simulation, so that a thousand
//! nodes and an hour of gossip run in seconds and a seed replays a run exactly.
//!
//! - events (packet deliveries, stream halves, node wakes) wait in a heap ordered by
//!   (virtual time, scheduling order); a node is woken only at [`NetDb::next_wake`], which is
//!   asked again after everything the node handles (it can move earlier), and a wake the node
//!   no longer wants is skipped — nodes are never ticked on a fixed step;
//! - [`Output::Send`](control::gossip::netdb::Output::Send) is one UDP packet: lost with probability `loss`, else delivered after
//!   a latency in `[latency_min, latency_max]`; `Output::PushPull` and `Output::Stream`
//!   are TCP exchanges: delivered reliably with latency both ways, unless the peer is
//!   unreachable (partitioned or stopped), as a failed connect;
//! - partitions ([`Sim::partition`], [`Sim::heal`]) and silent nodes ([`Sim::stop`],
//!   [`Sim::restart`]) cut links both ways, also for what is already in flight;
//! - per node: packets, bytes of table data per network, member and table events, and every
//!   `Failed` with who saw it when ([`stats`]); every byte only on request
//!   ([`Sim::count_all_bytes`]).
//!
//! Modules: [`network`] (addresses, seeded RNG, latency, loss, partitions), `events` (the
//! queue), `transport` (outputs and deliveries, byte counting), [`stats`], `curve` (the
//! benchmark's scaling curve).
//!
//! Read the quinn `Pair` (virtual clock, `drive()` jumps to the next wake-up) and smoltcp's
//! `tests/netsim.rs` for the model; STYLE.md §7 and §8. A failing test prints its seed:
//! `SHOAL_SIM_SEED=<seed>` replays it ([`seed_from_env`]).

mod curve;
mod detect;
mod events;
pub mod network;
pub mod stats;
mod transport;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use control::gossip::netdb::{Config, NetDb, NotAttached};
use control::gossip::tables::Key;
use control::gossip::wire::NodeState;
use dataplane::types::Timestamp;

pub use curve::{CurvePoint, curve, curve_with};
pub use detect::{Detection, detection};
use events::{Event, Queue};
use network::Network;
pub use network::{Link, Rng, addr, index, name};
pub use stats::{Failure, MemberCounts, NodeStats, Watched};

/// The seed when `SHOAL_SIM_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x5ea1_5eed;

/// The run's seed: `SHOAL_SIM_SEED` (decimal, or hex with `0x`) if set, else
/// [`DEFAULT_SEED`]. Panics on a value that does not parse, rather than running another seed.
pub fn seed_from_env() -> u64 {
    match std::env::var("SHOAL_SIM_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("SHOAL_SIM_SEED={s:?} is not a u64"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// Virtual nanoseconds as seconds, for reports.
pub fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub link: Link,
    pub netdb: Config,
    pub seed: u64,
    /// How many earlier nodes each node joins through.
    pub join_seeds: usize,
    /// Virtual time between two nodes' starts (plus up to as much again of jitter), so the
    /// cluster comes up like a real one rather than all at one instant.
    pub join_spacing: Duration,
}

impl SimConfig {
    /// `nodes` nodes with the default core configuration, 1 % loss, 1–10 ms latency.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            link: Link::default(),
            netdb: Config::default(),
            seed,
            join_seeds: 3,
            join_spacing: Duration::from_millis(5),
        }
    }
}

#[derive(Debug)]
struct Node {
    db: NetDb,
    /// Networks the node joins as soon as it starts.
    networks: Vec<String>,
    /// The wake-up this node has scheduled, if any (a `Wake` at another time is stale).
    wake: Option<u64>,
    stats: NodeStats,
}

#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    now: u64,
    nodes: Vec<Node>,
    net: Network,
    queue: Queue,
    count_all_bytes: bool,
    failures: Vec<Failure>,
    /// Every `Suspected`, recorded like the failures.
    suspicions: Vec<Failure>,
    watching: BTreeSet<Key>,
    watched: Vec<Watched>,
    /// Times a node asked to be woken at or before the instant it was just ticked at (the
    /// core would spin): woken a millisecond later instead, and counted here.
    stuck_wakes: u64,
    /// Packets to addresses no simulated node has.
    unroutable: u64,
    events: u64,
    /// Events processed, by kind: start, wake (not stale), packet, push/pull, stream.
    kinds: [u64; 5],
    /// Nodes scheduled to start that have not yet.
    starting: usize,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let nodes = (0..config.nodes)
            .map(|i| Node {
                db: NetDb::new(
                    config.netdb,
                    &name(i),
                    addr(i),
                    network::mix(config.seed ^ network::mix(i as u64)),
                ),
                networks: Vec::new(),
                wake: None,
                stats: NodeStats::default(),
            })
            .collect();
        Sim {
            net: Network::new(config.nodes, config.link, config.seed),
            config,
            now: 0,
            nodes,
            queue: Queue::default(),
            count_all_bytes: false,
            failures: Vec::new(),
            suspicions: Vec::new(),
            watching: BTreeSet::new(),
            watched: Vec::new(),
            stuck_wakes: 0,
            unroutable: 0,
            events: 0,
            kinds: [0; 5],
            starting: 0,
        }
    }

    // ---- looking ------------------------------------------------------------------------

    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Virtual time, in nanoseconds since the simulation began.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now)
    }

    pub fn node(&self, i: usize) -> &NetDb {
        &self.nodes[i].db
    }

    pub fn stats(&self, i: usize) -> &NodeStats {
        &self.nodes[i].stats
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.net.is_up(i)
    }

    /// Every `Failed` event so far: who declared whom failed, when.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// Every `Suspected` event so far: who suspected whom, when.
    pub fn suspicions(&self) -> &[Failure] {
        &self.suspicions
    }

    /// Table events about the keys given to [`watch`](Self::watch).
    pub fn watched(&self) -> &[Watched] {
        &self.watched
    }

    pub fn stuck_wakes(&self) -> u64 {
        self.stuck_wakes
    }

    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// Events processed so far (a measure of the simulation's work).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events processed by kind: starts, wakes (stale ones not counted), packets,
    /// push/pull halves, stream halves.
    pub fn events_by_kind(&self) -> [u64; 5] {
        self.kinds
    }

    /// Events waiting in the queue.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// How many members node `i` sees alive among the running nodes.
    pub fn alive_seen(&self, i: usize) -> usize {
        let n = self.nodes.len();
        self.nodes[i]
            .db
            .membership()
            .members()
            .filter(|m| m.state == NodeState::Alive)
            .filter(|m| index(m.addr, n).is_some_and(|j| self.net.is_up(j)))
            .count()
    }

    /// Whether node `i` sees every other running node alive.
    pub fn sees_all_alive(&self, i: usize) -> bool {
        let up = (0..self.nodes.len()).filter(|&j| self.net.is_up(j)).count();
        self.alive_seen(i) + 1 == up
    }

    /// Whether every running node sees every other running node alive (never while nodes
    /// are still to start).
    pub fn membership_converged(&self) -> bool {
        self.starting == 0
            && (0..self.nodes.len())
                .filter(|&i| self.net.is_up(i))
                .all(|i| self.sees_all_alive(i))
    }

    /// Node `observer`'s view of node `node`'s state, if it knows it.
    pub fn state_seen(&self, observer: usize, node: usize) -> Option<NodeState> {
        self.nodes[observer]
            .db
            .membership()
            .member(&name(node))
            .map(|m| m.state)
    }

    // ---- acting -------------------------------------------------------------------------

    /// Starts every node, in order, a few milliseconds apart: node `i` joins through up to
    /// `join_seeds` random earlier nodes (node 0 starts alone).
    pub fn join_all(&mut self) {
        let spacing = nanos(self.config.join_spacing);
        let mut at = self.now;
        for i in 0..self.nodes.len() {
            let mut earlier: Vec<usize> = (0..i).collect();
            let mut seeds = Vec::new();
            while seeds.len() < self.config.join_seeds && !earlier.is_empty() {
                let k = self.net.rng().below(earlier.len() as u64) as usize;
                seeds.push(earlier.swap_remove(k));
            }
            self.queue.push(at, Event::Start { node: i, seeds });
            self.starting += 1;
            at += spacing + self.net.rng().below(spacing + 1);
        }
    }

    /// Node `i` will join `network` as soon as it starts (call before
    /// [`join_all`](Self::join_all)): its attachment then spreads with its arrival.
    pub fn attach_on_start(&mut self, i: usize, network: &str) {
        self.nodes[i].networks.push(network.to_owned());
    }

    /// Node `i` joins `network` (it must be running).
    pub fn join_network(&mut self, i: usize, network: &str) {
        let out = self.nodes[i].db.join_network(network);
        self.dispatch(i, out);
        self.reschedule(i, false);
    }

    /// Node `i` leaves `network`.
    pub fn leave_network(&mut self, i: usize, network: &str) {
        let out = self.nodes[i].db.leave_network(Timestamp(self.now), network);
        self.dispatch(i, out);
        self.reschedule(i, false);
    }

    /// Node `i` writes (`Some`) or deletes (`None`) one of its entries.
    pub fn write(&mut self, i: usize, key: Key, value: Option<Vec<u8>>) -> Result<(), NotAttached> {
        let out = self.nodes[i].db.write(Timestamp(self.now), key, value)?;
        self.dispatch(i, out);
        self.reschedule(i, false);
        Ok(())
    }

    /// Records every table event about `key` from now on (see [`watched`](Self::watched)).
    pub fn watch(&mut self, key: Key) {
        self.watching.insert(key);
    }

    /// Counts every byte sent and received (an encode per message: slower) or only table
    /// data (the default).
    pub fn count_all_bytes(&mut self, on: bool) {
        self.count_all_bytes = on;
    }

    /// Node `i` goes silent: nothing reaches it or leaves it, it is not ticked. Its state is
    /// kept, as in a paused process or a cut cable.
    pub fn stop(&mut self, i: usize) {
        self.net.set_up(i, false);
        self.nodes[i].wake = None;
    }

    /// Node `i` comes back with the state it had when it was stopped.
    pub fn restart(&mut self, i: usize) {
        self.net.set_up(i, true);
        self.nodes[i].wake = None;
        self.reschedule(i, false);
    }

    /// Cuts the network into `groups` (nodes in none are cut off from all).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.net.partition(groups);
    }

    pub fn heal(&mut self) {
        self.net.heal();
    }

    // ---- time ---------------------------------------------------------------------------

    /// Runs every event up to `t` (virtual nanoseconds), then sets the clock to `t`.
    pub fn run_until(&mut self, t: u64) {
        while self.queue.next_at().is_some_and(|at| at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + nanos(d));
    }

    /// Runs until `done` holds, checked every `every`, for at most `limit`; how long it took
    /// (a multiple of `every`), or `None` if it never held.
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        every: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let end = start + nanos(limit);
        loop {
            if done(self) {
                return Some(Duration::from_nanos(self.now - start));
            }
            if self.now >= end {
                return None;
            }
            self.run_until((self.now + nanos(every)).min(end));
        }
    }

    fn step(&mut self) {
        let Some((at, event)) = self.queue.pop() else {
            return;
        };
        self.now = at;
        self.events += 1;
        match event {
            Event::Start { node, seeds } => {
                self.starting -= 1;
                self.kinds[0] += 1;
                self.net.set_up(node, true);
                let seeds: Vec<SocketAddr> = seeds.into_iter().map(addr).collect();
                let out = self.nodes[node].db.join(&seeds);
                self.dispatch(node, out);
                for network in std::mem::take(&mut self.nodes[node].networks) {
                    let out = self.nodes[node].db.join_network(&network);
                    self.dispatch(node, out);
                }
                self.reschedule(node, false);
            }
            Event::Wake { node } => {
                if self.nodes[node].wake != Some(at) {
                    return; // stale: the node asked for another time since
                }
                self.nodes[node].wake = None;
                if !self.net.is_up(node) {
                    return;
                }
                self.kinds[1] += 1;
                let out = self.nodes[node].db.tick(Timestamp(at));
                self.dispatch(node, out);
                self.reschedule(node, true);
            }
            Event::Packet {
                from,
                to,
                messages,
                table,
            } => {
                self.kinds[2] += 1;
                self.deliver_packet(from, to, messages, &table);
            }
            Event::PushPull {
                from,
                to,
                state,
                answer,
            } => {
                self.kinds[3] += 1;
                self.deliver_push_pull(from, to, state, answer);
            }
            Event::Stream {
                from,
                to,
                payload,
                table,
                answer,
            } => {
                self.kinds[4] += 1;
                self.deliver_stream(from, to, &payload, &table, answer);
            }
        }
    }

    /// Schedules node `i`'s next wake if it now wants one earlier than the one it has (a
    /// later wanted time is left to the earlier wake, whose tick then does nothing and
    /// schedules the right one). `ticked`: it was just ticked at `now`.
    fn reschedule(&mut self, i: usize, ticked: bool) {
        if !self.net.is_up(i) {
            return;
        }
        let mut at = self.nodes[i].db.next_wake().0.max(self.now);
        if ticked && at <= self.now {
            self.stuck_wakes += 1;
            at = self.now + 1_000_000;
        }
        if self.nodes[i].wake.is_some_and(|w| w <= at) {
            return;
        }
        self.nodes[i].wake = Some(at);
        self.queue.push(at, Event::Wake { node: i });
    }
}
