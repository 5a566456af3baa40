//! NetworkDB, sans-IO: the membership core and the network-scoped tables composed, with the
//! messages that carry the tables between nodes (Docker's `networkdb` package on top of
//! memberlist, with its semantics; `../shared/reference/docker-swarm-networking.md` §3).
//!
//! - who is on which network travels cluster-wide, on membership's broadcasts (piggybacked
//!   and gossiped) and in every push/pull's user state;
//! - a network's table changes travel only among that network's nodes: every
//!   `gossip_interval`, for each network with queued changes, one packet to `gossip_nodes`
//!   random live peers of that network; each change is sent `retransmit_mult ·
//!   ⌈log10(n + 1)⌉` times, `n` the network's size; a node that learns a change relays it;
//! - anti-entropy: every `bulk_sync_interval` a bulk sync (everything held of a network, over
//!   a stream, answered with the peer's) with one random peer per network; on network join
//!   with a few random peers (Docker syncs with all of them: a few suffice, each holds the
//!   whole network); with a failed node that comes back, if it owns entries hidden here;
//! - a failed node's entries are hidden, shown again if it recovers, reaped after `grace`;
//! - partitions: membership reconnects to failed members, and every `rejoin_interval` the
//!   bootstrap peers are joined again if none of them is a live member.
//!
//! Messages and `now` in, [`Output`]s out: packets, stream exchanges, member and table events.

mod message;
mod queue;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::deadlines::Deadlines;
use super::membership::{self, Membership, retransmit_limit};
use super::tables::{self, Attachment, Key, Tables};
use super::wire::{Message, PushNodeState};
use dataplane::types::Timestamp;
pub use message::{DecodeError, NetMessage, WireEntry};
use queue::{NetworkQueue, RELAY_CAP};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub membership: membership::Config,
    /// Table gossip: how often, and to how many peers of each network.
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    /// Anti-entropy per network (Docker: 30 s).
    pub bulk_sync_interval: Duration,
    /// Peers bulk-synced with when this node joins a network.
    pub join_sync_peers: usize,
    /// How long tombstones and a failed node's entries are kept (Docker: 30 min).
    pub grace: Duration,
    pub reap_interval: Duration,
    /// How often the bootstrap peers are joined again if none is a live member (Docker: 60 s).
    pub rejoin_interval: Duration,
    /// A recovered node's hidden entries show when its bulk sync answer is in, or after this
    /// long without one.
    pub restore_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            membership: membership::Config::default(),
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            bulk_sync_interval: Duration::from_secs(30),
            join_sync_peers: 3,
            grace: Duration::from_secs(30 * 60),
            reap_interval: Duration::from_secs(5),
            rejoin_interval: Duration::from_secs(60),
            restore_timeout: Duration::from_secs(10),
        }
    }
}

/// What the shell must do, and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Messages for one packet to `to`.
    Send {
        to: SocketAddr,
        messages: Vec<Message>,
    },
    /// A push/pull with `to` ([`NetDb::push_pull_state`] out, [`NetDb::merge_push_pull`] in).
    PushPull {
        to: SocketAddr,
        join: bool,
    },
    /// A stream user message to `to` (a bulk sync); an answer goes to [`NetDb::handle_stream`].
    Stream {
        to: SocketAddr,
        payload: Vec<u8>,
    },
    Member(membership::Event),
    Table(tables::Event),
}

/// Why this node refused a message of the table layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refused {
    /// Our prefix, but it does not decode.
    Malformed,
    /// Table data of a network this node is not on (a peer with a stale view sent it).
    OffNetwork,
    /// A user message of another layer (a Serf agent's): ignored.
    Foreign,
}

impl Refused {
    pub fn kind(self) -> &'static str {
        match self {
            Refused::Malformed => "malformed table message",
            Refused::OffNetwork => "table data of a network not attached here",
            Refused::Foreign => "foreign user message",
        }
    }
}

/// The node is not attached to the network it tried to write to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this node is not attached to network {0}: join it before writing to its tables")]
pub struct NotAttached(pub String);

/// A change's encoded size may not exceed this to travel by UDP gossip: larger ones only
/// travel in bulk syncs. The packet's other bytes (prefix, network name, framing) fit in
/// the rest of memberlist's 1400.
const BATCH_OVERHEAD: usize = 120;

#[derive(Debug)]
pub struct NetDb {
    config: Config,
    membership: Membership,
    tables: Tables,
    queues: BTreeMap<String, NetworkQueue>,
    bootstrap: Vec<SocketAddr>,
    /// When each failed or departed node went.
    failed_since: BTreeMap<String, Timestamp>,
    /// Recovered nodes whose entries wait for their bulk sync answer, until when.
    restoring: Deadlines,
    refused: BTreeMap<Refused, u64>,
    rng: u64,
    next_gossip: Timestamp,
    next_bulk_sync: Timestamp,
    next_reap: Timestamp,
    next_rejoin: Timestamp,
    /// How long until the next re-join while no bootstrap peer is reachable: from the
    /// reconnect interval, doubling up to `rejoin_interval` (a node started before its
    /// seeds finds them within seconds; a long partition is not hammered).
    rejoin_backoff: Duration,
}

impl NetDb {
    /// This node, `name` at `addr`; `seed` drives every random choice.
    pub fn new(config: Config, name: &str, addr: SocketAddr, seed: u64) -> Self {
        let at = |d| membership::add(Timestamp(0), d);
        Self {
            config,
            membership: Membership::new(config.membership, name, addr, Vec::new(), seed),
            tables: Tables::new(name, config.grace),
            queues: BTreeMap::new(),
            bootstrap: Vec::new(),
            failed_since: BTreeMap::new(),
            restoring: Deadlines::default(),
            refused: BTreeMap::new(),
            rng: (seed ^ 0x9e37_79b9_7f4a_7c15) | 1,
            next_gossip: Timestamp(0),
            next_bulk_sync: at(config.bulk_sync_interval),
            next_reap: at(config.reap_interval),
            next_rejoin: at(config.membership.reconnect_interval),
            rejoin_backoff: config.membership.reconnect_interval,
        }
    }

    pub fn name(&self) -> &str {
        self.membership.name()
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Messages refused so far, by reason.
    pub fn refused(&self) -> &BTreeMap<Refused, u64> {
        &self.refused
    }

    /// Changes waiting in the network queues.
    pub fn queued(&self) -> usize {
        self.queues.values().map(NetworkQueue::len).sum()
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Up to `k` of `items`, chosen at random.
    fn pick<T>(&mut self, mut items: Vec<T>, k: usize) -> Vec<T> {
        for i in (1..items.len()).rev() {
            let j = (self.next_random() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
        items.truncate(k);
        items
    }

    /// The live peers of `network`, by address.
    fn live_peers(&self, network: &str) -> Vec<SocketAddr> {
        self.tables
            .peers_of(network)
            .iter()
            .filter(|n| self.membership.is_live(n))
            .filter_map(|n| self.membership.member(n).map(|m| m.addr))
            .collect()
    }

    // ---- the application's side -------------------------------------------------------

    /// Joins the cluster through `seeds` (remembered as the bootstrap peers).
    pub fn join(&mut self, seeds: &[SocketAddr]) -> Vec<Output> {
        self.bootstrap = seeds.to_vec();
        seeds
            .iter()
            .map(|&to| Output::PushPull { to, join: true })
            .collect()
    }

    /// Attaches this node to `network`: announced to all, and a bulk sync with a few of its
    /// peers fills its tables in.
    pub fn join_network(&mut self, network: &str) -> Vec<Output> {
        if self.tables.is_attached(network) {
            return Vec::new();
        }
        let announcement = self.tables.join_network(network);
        self.announce(announcement);
        let peers = self.live_peers(network);
        let peers = self.pick(peers, self.config.join_sync_peers);
        peers
            .into_iter()
            .map(|to| self.bulk_sync_to(to, vec![network.to_owned()], true))
            .collect()
    }

    /// Leaves `network`: our entries there are deleted everywhere, its entries forgotten.
    pub fn leave_network(&mut self, now: Timestamp, network: &str) -> Vec<Output> {
        if !self.tables.is_attached(network) {
            return Vec::new();
        }
        let (deletes, events, announcement) = self.tables.leave_network(now, network);
        for change in deletes {
            self.enqueue(change, true);
        }
        self.announce(announcement);
        events.into_iter().map(Output::Table).collect()
    }

    /// Writes (`Some`) or deletes (`None`) one of our entries.
    pub fn write(
        &mut self,
        now: Timestamp,
        key: Key,
        value: Option<Vec<u8>>,
    ) -> Result<Vec<Output>, NotAttached> {
        let network = key.network.clone();
        let (change, event) = self
            .tables
            .write(now, key, value)
            .ok_or(NotAttached(network))?;
        self.enqueue(change, true);
        Ok(event.into_iter().map(Output::Table).collect())
    }

    /// Leaving the cluster: the messages to send before stopping.
    pub fn leave(&mut self) -> Vec<Output> {
        let outputs = self.membership.leave();
        self.absorb(Timestamp(0), outputs)
    }

    fn announce(&mut self, record: Attachment) {
        let key = format!("attachment/{}/{}", record.node, record.network);
        self.membership
            .broadcast_user(key, NetMessage::Attachment(record).encode());
    }

    fn enqueue(&mut self, change: tables::Change, own: bool) {
        let (network, entry) = WireEntry::from_change(change);
        let key = Key {
            network: network.clone(),
            table: entry.table.clone(),
            key: entry.key.clone(),
        };
        let queue = self.queues.entry(network).or_default();
        // Relayed changes are not queued past the cap (NetworkDB's rule for bulk-synced
        // ones, applied to all): the next bulk sync repairs what that leaves out.
        if !own && queue.len() >= RELAY_CAP {
            return;
        }
        if entry.encoded_len() + BATCH_OVERHEAD <= self.config.membership.packet_size {
            queue.push(key, entry, own);
        }
    }

    // ---- time --------------------------------------------------------------------------

    pub fn tick(&mut self, now: Timestamp) -> Vec<Output> {
        let outputs = self.membership.tick(now);
        let mut out = self.absorb(now, outputs);
        if now >= self.next_gossip {
            self.next_gossip = membership::add(now, self.config.gossip_interval);
            self.gossip_tables(&mut out);
        }
        if now >= self.next_bulk_sync {
            self.next_bulk_sync = membership::add(now, self.config.bulk_sync_interval);
            self.bulk_sync_round(&mut out);
        }
        for node in self.restoring.take_overdue(now) {
            self.restore(&node, &mut out);
        }
        if now >= self.next_reap {
            self.next_reap = membership::add(now, self.config.reap_interval);
            self.tables.reap(now, &self.failed_since);
        }
        if now >= self.next_rejoin {
            let wait = if self.rejoin_bootstrap(&mut out) {
                let wait = self.rejoin_backoff;
                self.rejoin_backoff = (wait * 2).min(self.config.rejoin_interval);
                wait
            } else {
                self.rejoin_backoff = self.config.membership.reconnect_interval;
                self.config.rejoin_interval
            };
            self.next_rejoin = membership::add(now, wait);
        }
        out
    }

    /// The earliest time [`tick`](Self::tick) has something to do.
    pub fn next_wake(&self) -> Timestamp {
        let gossip = self
            .queues
            .values()
            .any(|q| !q.is_empty())
            .then_some(self.next_gossip);
        [
            self.membership.next_wake(),
            self.next_bulk_sync,
            self.restoring.next().unwrap_or(self.next_reap),
            self.next_reap,
            self.next_rejoin,
        ]
        .into_iter()
        .chain(gossip)
        .min()
        .unwrap_or(self.next_reap)
    }

    /// Each network's queued changes to a few random live peers of that network.
    fn gossip_tables(&mut self, out: &mut Vec<Output>) {
        let budget = self
            .config
            .membership
            .packet_size
            .saturating_sub(BATCH_OVERHEAD);
        let networks: Vec<String> = self.queues.keys().cloned().collect();
        for network in networks {
            let peers = self.live_peers(&network);
            let targets = self.pick(peers, self.config.gossip_nodes);
            let limit = retransmit_limit(
                self.config.membership.retransmit_mult,
                self.tables.network_size(&network),
            );
            let Some(queue) = self.queues.get_mut(&network) else {
                continue;
            };
            for to in targets {
                let entries = queue.take(budget, limit);
                if entries.is_empty() {
                    break;
                }
                let message = NetMessage::Changes {
                    network: network.clone(),
                    entries,
                };
                out.push(Output::Send {
                    to,
                    messages: vec![Message::User(message.encode())],
                });
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// One bulk sync per network with a random live peer of it, grouped by peer.
    fn bulk_sync_round(&mut self, out: &mut Vec<Output>) {
        let mut by_peer: BTreeMap<SocketAddr, Vec<String>> = BTreeMap::new();
        let networks: Vec<String> = self.tables.networks().map(str::to_owned).collect();
        for network in networks {
            let peers = self.live_peers(&network);
            if let Some(peer) = self.pick(peers, 1).pop() {
                by_peer.entry(peer).or_default().push(network);
            }
        }
        for (to, networks) in by_peer {
            out.push(self.bulk_sync_to(to, networks, true));
        }
    }

    fn bulk_sync_to(&self, to: SocketAddr, networks: Vec<String>, reply: bool) -> Output {
        Output::Stream {
            to,
            payload: self.bulk_sync(networks, reply).encode(),
        }
    }

    fn bulk_sync(&self, networks: Vec<String>, reply: bool) -> NetMessage {
        let entries = networks
            .iter()
            .flat_map(|n| self.tables.bulk(n))
            .map(WireEntry::from_change)
            .collect();
        NetMessage::BulkSync {
            from: self.name().to_owned(),
            networks,
            entries,
            // Only ours: who else is attached travels in push/pulls (NetworkDB's node
            // state). Every record known, in every bulk sync, made a healed partition's
            // recoveries cost N² streams of N records each (a node bulk-syncs with each
            // member that comes back); ours is what the peer needs to send us the network's
            // changes, and what a network join announces.
            attachments: self.tables.own_attachments(),
            reply,
        }
    }

    /// After a partition (or a start before the seeds were up): if no bootstrap peer is a
    /// live member, join them all again. True if it did.
    fn rejoin_bootstrap(&self, out: &mut Vec<Output>) -> bool {
        let me = self.membership.addr();
        let live = |seed: &SocketAddr| {
            self.membership
                .members()
                .any(|m| m.addr == *seed && self.membership.is_live(&m.name))
        };
        let others: Vec<SocketAddr> = self
            .bootstrap
            .iter()
            .filter(|s| **s != me)
            .copied()
            .collect();
        if others.is_empty() || others.iter().any(live) {
            return false;
        }
        out.extend(
            others
                .into_iter()
                .map(|to| Output::PushPull { to, join: true }),
        );
        true
    }

    // ---- the network's side ------------------------------------------------------------

    /// One message that came in a packet from `from`.
    pub fn handle(&mut self, now: Timestamp, from: SocketAddr, message: Message) -> Vec<Output> {
        let outputs = self.membership.handle(now, from, message);
        self.absorb(now, outputs)
    }

    /// The network reported `addr` unreachable (see [`Membership::unreachable`]).
    pub fn unreachable(&mut self, now: Timestamp, addr: SocketAddr) -> Vec<Output> {
        let outputs = self.membership.unreachable(now, addr);
        self.absorb(now, outputs)
    }

    /// Our state for a push/pull: the member list and, as user state, the attachments (none
    /// while there are none: a Serf peer then merges an empty state, not a foreign one).
    pub fn push_pull_state(&self) -> (Vec<PushNodeState>, Vec<u8>) {
        let attachments = self.tables.attachments();
        let user_state = if attachments.is_empty() {
            Vec::new()
        } else {
            NetMessage::Attachments(attachments).encode()
        };
        (self.membership.local_state(), user_state)
    }

    /// A peer's push/pull state.
    pub fn merge_push_pull(
        &mut self,
        now: Timestamp,
        nodes: Vec<PushNodeState>,
        user_state: &[u8],
    ) -> Vec<Output> {
        let outputs = self.membership.merge_remote_state(now, nodes);
        let out = self.absorb(now, outputs);
        if !user_state.is_empty() {
            match NetMessage::decode(user_state) {
                Ok(NetMessage::Attachments(records)) => {
                    for record in records {
                        self.apply_attachment(record, false);
                    }
                }
                Ok(_) => self.refuse(Refused::Malformed),
                Err(e) => self.refuse_decode(e),
            }
        }
        out
    }

    /// A stream user message (a bulk sync); returns the answer to write back, if any.
    pub fn handle_stream(
        &mut self,
        now: Timestamp,
        payload: &[u8],
    ) -> (Option<Vec<u8>>, Vec<Output>) {
        let mut out = Vec::new();
        match NetMessage::decode(payload) {
            Ok(NetMessage::BulkSync {
                from,
                networks,
                entries,
                attachments,
                reply,
            }) => {
                for record in attachments {
                    self.apply_attachment(record, false);
                }
                for (network, entry) in entries {
                    if !networks.contains(&network) {
                        self.refuse(Refused::Malformed);
                        continue;
                    }
                    self.apply_change(now, entry.into_change(network), &mut out);
                }
                // A recovered node's own state is in: its deletes while away are applied, so
                // what is left of its hidden entries can show.
                if self.restoring.remove(&from) {
                    self.restore(&from, &mut out);
                }
                let ours: Vec<String> = networks
                    .into_iter()
                    .filter(|n| self.tables.is_attached(n))
                    .collect();
                let answer = reply.then(|| self.bulk_sync(ours, false).encode());
                (answer, out)
            }
            Ok(_) => {
                self.refuse(Refused::Malformed);
                (None, out)
            }
            Err(e) => {
                self.refuse_decode(e);
                (None, out)
            }
        }
    }

    fn refuse(&mut self, why: Refused) {
        *self.refused.entry(why).or_default() += 1;
    }

    fn refuse_decode(&mut self, e: DecodeError) {
        self.refuse(match e {
            DecodeError::Foreign => Refused::Foreign,
            DecodeError::Malformed => Refused::Malformed,
        });
    }

    /// Membership's outputs, with its events and user messages acted upon.
    fn absorb(&mut self, now: Timestamp, outputs: Vec<membership::Output>) -> Vec<Output> {
        let mut out = Vec::with_capacity(outputs.len());
        for output in outputs {
            match output {
                membership::Output::Send { to, messages } => {
                    out.push(Output::Send { to, messages });
                }
                membership::Output::PushPull { to, join } => {
                    out.push(Output::PushPull { to, join });
                }
                membership::Output::User { from: _, payload } => {
                    self.handle_user(now, &payload, &mut out);
                }
                membership::Output::Event(event) => {
                    // The member's news first, then what it does to the tables.
                    out.push(Output::Member(event.clone()));
                    self.member_event(now, &event, &mut out);
                }
            }
        }
        out
    }

    fn member_event(&mut self, now: Timestamp, event: &membership::Event, out: &mut Vec<Output>) {
        match event {
            membership::Event::Failed(node) | membership::Event::Left(node) => {
                self.failed_since.entry(node.clone()).or_insert(now);
                self.restoring.remove(node);
                out.extend(self.tables.node_failed(node).into_iter().map(Output::Table));
            }
            membership::Event::Recovered(node) => {
                self.failed_since.remove(node);
                // What changed while it was away, both ways, if we hide entries of it: they
                // stay hidden until its answer is applied (or `restore_timeout` passes):
                // shown at once, an entry it deleted while away would come back until its
                // tombstone arrived. Only then: after a healed partition every node sees
                // half the cluster recover, and a sync with each was N² streams. The nodes
                // that own entries are synced with by everyone, and each answer carries
                // all its side holds; the rest comes with the periodic bulk syncs.
                if !self.tables.hides_entries_of(node) {
                    self.restore(node, out);
                    return;
                }
                let common: Vec<String> = self
                    .tables
                    .networks()
                    .filter(|n| self.tables.is_attached_node(n, node))
                    .map(str::to_owned)
                    .collect();
                match self.membership.member(node) {
                    Some(m) if !common.is_empty() => {
                        out.push(self.bulk_sync_to(m.addr, common, true));
                        self.restoring.insert(
                            node.clone(),
                            membership::add(now, self.config.restore_timeout),
                        );
                    }
                    _ => self.restore(node, out),
                }
            }
            membership::Event::Joined(_) | membership::Event::Suspected(_) => {}
        }
    }

    /// Shows a recovered node's hidden entries again.
    fn restore(&mut self, node: &str, out: &mut Vec<Output>) {
        out.extend(
            self.tables
                .node_recovered(node)
                .into_iter()
                .map(Output::Table),
        );
    }

    fn handle_user(&mut self, now: Timestamp, payload: &[u8], out: &mut Vec<Output>) {
        match NetMessage::decode(payload) {
            Ok(NetMessage::Attachment(record)) => self.apply_attachment(record, true),
            Ok(NetMessage::Changes { network, entries }) => {
                if !self.tables.is_attached(&network) {
                    self.refuse(Refused::OffNetwork);
                    return;
                }
                for entry in entries {
                    self.apply_change(now, entry.into_change(network.clone()), out);
                }
            }
            Ok(NetMessage::BulkSync { .. } | NetMessage::Attachments(_)) => {
                self.refuse(Refused::Malformed);
            }
            Err(e) => self.refuse_decode(e),
        }
    }

    /// An attachment record; `relay`: pass it on if it was news (it came by gossip).
    fn apply_attachment(&mut self, record: Attachment, relay: bool) {
        let (changed, correction) = self.tables.apply_attachment(record.clone());
        if let Some(correction) = correction {
            self.announce(correction);
        }
        if changed && relay {
            self.announce(record);
        }
    }

    /// A table change from a peer: stored if newer, then relayed.
    fn apply_change(&mut self, now: Timestamp, change: tables::Change, out: &mut Vec<Output>) {
        let applied = self.tables.apply(now, change.clone());
        if let Some(correction) = applied.correction {
            self.enqueue(correction, true);
        }
        if applied.fresh {
            self.enqueue(change, false);
        }
        out.extend(applied.event.map(Output::Table));
    }
}
