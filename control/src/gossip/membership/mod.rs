//! SWIM membership with Lifeguard's suspicion, as HashiCorp memberlist runs it, sans-IO:
//! messages and `now` in, packets to send and member events out. The shell (to come) owns the
//! sockets, the clock and the push/pull streams; this core decides who is probed, who is
//! suspected, who is dead, and what news rides on every packet.
//!
//! - probing: one member per probe interval, in a shuffled round; no ack within the probe
//!   timeout → `k` indirect probes through other members (with nacks); still nothing by the
//!   end of the interval → suspect. A probe of a suspected member carries the suspicion
//!   (Lifeguard's buddy system, as memberlist), so a live one refutes at once;
//! - beyond memberlist, a few things make detection faster and steadier, without a message of
//!   our own (a Serf peer sees nothing new): an ICMP port or host unreachable for a probe
//!   ([`Membership::unreachable`]) starts the indirect probes at once, relays nack at once
//!   for the same reason, and the probe concludes when every relay has nacked: a process that
//!   died on a live host is suspected in milliseconds, not at the end of the interval. And a
//!   member that hears of a new suspicion probes the suspect next, out of turn (about
//!   `2·(k + 1)` members do, whatever the cluster's size), so the independent confirmations
//!   that shorten the timeout come within a probe interval rather than when the rounds
//!   happen to reach it. Likewise for joins: a push/pull that introduces members tells them
//!   we are alive directly (up to 32), so a joining node is known to all at once;
//! - suspicion (Lifeguard): the timeout starts at `max` and shrinks toward `min` as independent
//!   members confirm it (`timeout(c) = max(min, max − (max − min)·log(c+1)/log(k+1))`); a member
//!   refutes it by raising its incarnation;
//! - local health (Lifeguard): missed acks raise an awareness score that stretches how long a
//!   failing probe waits for indirect acks before it suspects (and so, as in memberlist, holds
//!   back the next probe until then), so a slow node does not accuse healthy ones; probes that
//!   succeed keep the base interval, and the direct probe timeout is never stretched;
//! - dissemination: alive/suspect/dead news (and the layer above's user broadcasts) is
//!   piggybacked on every packet and gossiped every `gossip_interval` to `gossip_nodes` random
//!   members (and to members dead for less than `gossip_to_dead`), each item sent
//!   `retransmit_mult · ⌈log10(n + 1)⌉` times, newer news about a node replacing older;
//! - anti-entropy: a push/pull with one random member every `push_pull_interval` (scaled up
//!   above 32 members as memberlist does, from a random phase), and, like NetworkDB's `reconnectNode`, one with a
//!   random failed member every `reconnect_interval`: that is how the two sides of a healed
//!   partition find each other again.
//!
//! Stream exchanges and user messages are the shell's: the core asks for them with
//! [`Output::PushPull`] and hands user payloads up with [`Output::User`].

mod broadcast;
mod suspicion;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub use broadcast::About;
use broadcast::Broadcasts;
use suspicion::{Suspicion, Suspicions};

use super::wire::{
    Ack, Alive, Dead, IndirectPing, Message, Nack, NodeState, Ping, PushNodeState, Suspect,
    Versions, encode,
};
use dataplane::types::Timestamp;

/// memberlist's LAN profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub indirect_checks: usize,
    pub retransmit_mult: u32,
    pub suspicion_mult: u32,
    pub suspicion_max_timeout_mult: u32,
    /// The highest local-health score (the interval stretches up to `(max + 1)×`).
    pub awareness_max: u32,
    /// News items piggybacked on one packet at most.
    pub piggyback: usize,
    /// Largest packet we build (memberlist's `UDPBufferSize`).
    pub packet_size: usize,
    /// How often queued news is gossiped, and to how many random members.
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    /// Dead members still get gossip this long (so they can learn they must refute).
    pub gossip_to_dead: Duration,
    /// Anti-entropy with one random live member (scaled above 32 members).
    pub push_pull_interval: Duration,
    /// A push/pull join with one random failed member (NetworkDB's `reconnectNode`).
    pub reconnect_interval: Duration,
    /// The protocol versions announced for this node (memberlist checks them on join).
    pub versions: Versions,
}

/// memberlist protocol 1–5 speaking 2, delegate (Serf) protocol 2–5 speaking 5: what a Serf
/// 0.9 agent announces, so its compatibility check accepts us.
pub const VERSIONS: Versions = Versions {
    protocol_min: 1,
    protocol_max: 5,
    protocol_cur: 2,
    delegate_min: 2,
    delegate_max: 5,
    delegate_cur: 5,
};

impl Default for Config {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max: 8,
            piggyback: 8,
            packet_size: 1400,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_dead: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(1),
            versions: VERSIONS,
        }
    }
}

/// What this node knows of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    pub meta: Vec<u8>,
    pub incarnation: u32,
    pub state: NodeState,
}

/// What happened to the membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Joined(String),
    Suspected(String),
    Failed(String),
    Left(String),
    /// A suspected or failed member is alive again.
    Recovered(String),
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these messages to `to` in one packet (compound if more than one).
    Send {
        to: SocketAddr,
        messages: Vec<Message>,
    },
    Event(Event),
    /// Exchange states with `to` over a stream (a join if `join`), then merge what came back
    /// with [`Membership::merge_remote_state`].
    PushPull {
        to: SocketAddr,
        join: bool,
    },
    /// A user message for the layer above.
    User {
        from: SocketAddr,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
struct Probe {
    target: String,
    /// When the direct probe gives up and indirect ones start.
    direct_deadline: Timestamp,
    /// When the target is suspected if nothing answered.
    deadline: Timestamp,
    /// The indirect probes went out (at the direct deadline, or at once if the target's
    /// address was reported unreachable).
    escalated: bool,
    /// How many members were asked to probe indirectly (each answers with an ack or a nack).
    indirect_sent: usize,
    nacks: usize,
    /// The network said the target's port or host is unreachable (an ICMP error for our
    /// ping): no direct ack can come.
    refused: bool,
}

#[derive(Clone, Debug)]
struct Relay {
    origin: SocketAddr,
    origin_seq: u32,
    nack: bool,
    deadline: Timestamp,
    /// Whom we ping for the origin.
    target: SocketAddr,
}

#[derive(Debug)]
pub struct Membership {
    config: Config,
    me: Member,
    members: BTreeMap<String, Member>,
    order: Vec<String>,
    next_in_order: usize,
    /// A member to probe out of turn, at the next tick: one just suspected by someone else
    /// (see [`Membership::on_suspect`]).
    expedite: Option<String>,
    /// The next tick of the probe ticker: a fixed interval from a random phase (memberlist's
    /// `triggerFunc` stagger), so nodes started together do not probe in step.
    next_probe: Timestamp,
    seq: u32,
    probes: BTreeMap<u32, Probe>,
    relays: BTreeMap<u32, Relay>,
    suspicions: Suspicions,
    broadcasts: Broadcasts,
    awareness: u32,
    rng: u64,
    next_gossip: Timestamp,
    next_push_pull: Timestamp,
    next_reconnect: Timestamp,
    /// When each dead (not left) member was declared dead.
    dead_since: BTreeMap<String, Timestamp>,
    /// Members alive or suspected (this one not counted), kept as states change: every
    /// packet's retransmit limit needs it, and counting a large cluster each time is not free.
    live: usize,
    /// Every member's name in the order it joined (members are never removed): random
    /// access for drawing gossip targets.
    names: Vec<String>,
}

/// A compound packet's header (type and count) before its parts.
const COMPOUND_OVERHEAD: usize = 2;

/// The most members a push/pull's newcomers are told of us directly
/// ([`Membership::announce_to_learned`]): every one in a cluster of the benchmark's sizes,
/// a bounded burst in a large one (gossip reaches the rest).
const ANNOUNCE_MAX: usize = 32;

/// `retransmit_mult · ⌈log10(n + 1)⌉` (memberlist's `retransmitLimit`), at least `mult`.
pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    mult * ((n as f64 + 1.0).log10().ceil().max(1.0) as u32)
}

/// memberlist's `pushPullScale`: above 32 members the interval grows with `log2(n / 32)`,
/// so the cluster's total push/pull load stays about flat.
fn push_pull_interval(base: Duration, n: usize) -> Duration {
    if n <= 32 {
        return base;
    }
    let factor = ((n as f64).log2() - 32f64.log2()).ceil() as u32 + 1;
    base * factor
}

/// The first tick after `now` of a ticker that ticked at `last` every `interval`.
fn next_tick(last: Timestamp, interval: Duration, now: Timestamp) -> Timestamp {
    let interval = u64::try_from(interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let missed = now.saturating_sub_nanos(last) / interval;
    Timestamp(
        last.0
            .saturating_add(missed.saturating_add(1).saturating_mul(interval)),
    )
}

pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
}

impl Membership {
    /// This node, known as `name` at `addr`; `seed` drives the probe order and the choice of
    /// indirect probers (no randomness of its own).
    pub fn new(config: Config, name: &str, addr: SocketAddr, meta: Vec<u8>, seed: u64) -> Self {
        let me = Member {
            name: name.to_owned(),
            addr,
            meta,
            incarnation: 1,
            state: NodeState::Alive,
        };
        let mut m = Self {
            config,
            me,
            members: BTreeMap::new(),
            order: Vec::new(),
            next_in_order: 0,
            expedite: None,
            next_probe: Timestamp(0),
            seq: 0,
            probes: BTreeMap::new(),
            relays: BTreeMap::new(),
            suspicions: Suspicions::default(),
            broadcasts: Broadcasts::default(),
            awareness: 0,
            rng: seed | 1,
            next_gossip: Timestamp(0),
            next_push_pull: add(Timestamp(0), config.push_pull_interval),
            next_reconnect: add(Timestamp(0), config.reconnect_interval),
            dead_since: BTreeMap::new(),
            live: 0,
            names: Vec::new(),
        };
        let interval = u64::try_from(config.probe_interval.as_nanos()).unwrap_or(u64::MAX);
        m.next_probe = Timestamp(m.next_random() % interval.max(1));
        // memberlist's `pushPullTrigger` stagger: nodes started together would otherwise all
        // sync at once, and a join missed by gossip would wait a whole interval for repair.
        let interval = u64::try_from(config.push_pull_interval.as_nanos()).unwrap_or(u64::MAX);
        m.next_push_pull = Timestamp(m.next_random() % interval.max(1));
        m.broadcast_alive_self();
        m
    }

    pub fn name(&self) -> &str {
        &self.me.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.me.addr
    }

    pub fn incarnation(&self) -> u32 {
        self.me.incarnation
    }

    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    /// Every member but this one.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// Whether `name` is a member in good standing (alive or only suspected).
    pub fn is_live(&self, name: &str) -> bool {
        self.members
            .get(name)
            .is_some_and(|m| matches!(m.state, NodeState::Alive | NodeState::Suspect))
    }

    /// Members (this one included) that are alive or suspected: the cluster's size as
    /// Lifeguard counts it.
    pub fn live_count(&self) -> usize {
        1 + self.live
    }

    /// This node's view for a push/pull exchange (itself included).
    pub fn local_state(&self) -> Vec<PushNodeState> {
        std::iter::once(&self.me)
            .chain(self.members.values())
            .map(|m| PushNodeState {
                name: m.name.clone(),
                addr: m.addr.ip(),
                port: m.addr.port(),
                meta: m.meta.clone(),
                incarnation: m.incarnation,
                state: m.state,
                vsn: Some(self.config.versions),
            })
            .collect()
    }

    /// Merges a push/pull's remote states: alive news treated as alive messages, dead and left
    /// as dead ones, suspect as suspect (memberlist's `mergeState`); then tells the members it
    /// introduced that we are alive ([`Self::announce_to_learned`]).
    pub fn merge_remote_state(&mut self, now: Timestamp, nodes: Vec<PushNodeState>) -> Vec<Output> {
        let mut out = Vec::new();
        for n in nodes {
            let addr = SocketAddr::new(n.addr, n.port);
            match n.state {
                NodeState::Alive => self.on_alive(
                    now,
                    Alive {
                        incarnation: n.incarnation,
                        node: n.name,
                        addr: n.addr,
                        port: n.port,
                        meta: n.meta,
                        vsn: None,
                    },
                    addr,
                    &mut out,
                ),
                NodeState::Suspect => self.on_suspect(
                    now,
                    Suspect {
                        incarnation: n.incarnation,
                        node: n.name,
                        from: self.me.name.clone(),
                    },
                    &mut out,
                ),
                NodeState::Dead | NodeState::Left => {
                    // Someone else's view of a death is a suspicion here: we check for ourselves.
                    let from = if n.state == NodeState::Left {
                        n.name.clone()
                    } else {
                        self.me.name.clone()
                    };
                    if n.state == NodeState::Left {
                        self.on_dead(
                            now,
                            Dead {
                                incarnation: n.incarnation,
                                node: n.name,
                                from,
                            },
                            &mut out,
                        );
                    } else {
                        self.on_suspect(
                            now,
                            Suspect {
                                incarnation: n.incarnation,
                                node: n.name,
                                from,
                            },
                            &mut out,
                        );
                    }
                }
            }
        }
        self.announce_to_learned(&mut out);
        out
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to shuffle a probe order.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// How long a probe waits for any ack before it suspects: the probe interval stretched by
    /// local health (memberlist's `awareness.ScaleTimeout(ProbeInterval)`).
    fn scaled(&self, d: Duration) -> Duration {
        d * (self.awareness + 1)
    }

    fn adjust_awareness(&mut self, delta: i64) {
        let next =
            (i64::from(self.awareness) + delta).clamp(0, i64::from(self.config.awareness_max));
        self.awareness = u32::try_from(next).unwrap_or(0);
    }

    /// What we say of ourselves.
    fn alive_self(&self) -> Alive {
        Alive {
            incarnation: self.me.incarnation,
            node: self.me.name.clone(),
            addr: self.me.addr.ip(),
            port: self.me.addr.port(),
            meta: self.me.meta.clone(),
            vsn: Some(self.config.versions),
        }
    }

    fn broadcast_alive_self(&mut self) {
        let alive = self.alive_self();
        self.broadcasts
            .queue(About::Node(self.me.name.clone()), Message::Alive(alive));
    }

    /// Tells members just learned of by a push/pull that we are alive, directly, up to
    /// [`ANNOUNCE_MAX`] of them (a random choice if there are more). A node that joins learns
    /// the whole cluster from one member, and the others hear of it by gossip: three random
    /// members a round, so the last one a round or two later, or, when a wave misses it, at
    /// its next push/pull, up to 30 s on. Beyond memberlist; one small packet each, only for
    /// members new to us.
    fn announce_to_learned(&mut self, out: &mut Vec<Output>) {
        let mut learned: Vec<SocketAddr> = out
            .iter()
            .filter_map(|o| match o {
                Output::Event(Event::Joined(name)) => self.members.get(name).map(|m| m.addr),
                _ => None,
            })
            .collect();
        let keep = learned.len().min(ANNOUNCE_MAX);
        for i in 0..keep {
            let j = i + (self.next_random() % (learned.len() - i) as u64) as usize;
            learned.swap(i, j);
        }
        learned.truncate(keep);
        for to in learned {
            let alive = Message::Alive(self.alive_self());
            self.send(to, alive, out);
        }
    }

    /// Queues a user message of the layer above for gossip; a newer one with the same `key`
    /// replaces it.
    pub fn broadcast_user(&mut self, key: String, payload: Vec<u8>) {
        self.broadcasts
            .queue(About::User(key), Message::User(payload));
    }

    /// How many times each news item is sent: `retransmit_mult · ⌈log10(n + 1)⌉`.
    fn retransmit_limit(&self) -> u32 {
        retransmit_limit(self.config.retransmit_mult, self.live_count())
    }

    /// A packet to `to`: `first`, then as much queued news as fits.
    fn send(&mut self, to: SocketAddr, first: Message, out: &mut Vec<Output>) {
        self.send_all(to, vec![first], out);
    }

    /// A packet to `to`: `messages`, then as much queued news as fits.
    fn send_all(&mut self, to: SocketAddr, mut messages: Vec<Message>, out: &mut Vec<Output>) {
        // Most packets have no news to carry: then the limit (a count of all members) and
        // the packet budget are not worked out.
        if !self.broadcasts.is_empty() {
            let limit = self.retransmit_limit();
            let used: usize = messages
                .iter()
                .map(|m| encode(m).len() + broadcast::PART_OVERHEAD)
                .sum();
            let budget = self
                .config
                .packet_size
                .saturating_sub(used + COMPOUND_OVERHEAD);
            messages.extend(self.broadcasts.take(self.config.piggyback, budget, limit));
        }
        out.push(Output::Send { to, messages });
    }

    // ---- time ------------------------------------------------------------------------

    /// Advances time: starts the next probe when it is due, escalates and concludes probes,
    /// relays and suspicions whose time has come.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Output> {
        let mut out = Vec::new();
        self.expire_probes(now, &mut out);
        self.expire_relays(now, &mut out);
        self.expire_suspicions(now, &mut out);
        // memberlist runs `probeNode` synchronously on a ticker that drops the ticks it misses:
        // a probe still waiting (a failing one, for a stretched interval) holds the next back
        // until it concludes, which then starts at once; probes that are answered keep the
        // base interval whatever the local health.
        if now >= self.next_probe && self.probes.is_empty() {
            self.next_probe = next_tick(self.next_probe, self.config.probe_interval, now);
            self.probe_next(now, &mut out);
        }
        if now >= self.next_gossip {
            self.next_gossip = add(now, self.config.gossip_interval);
            self.gossip(now, &mut out);
        }
        if now >= self.next_push_pull {
            let interval = push_pull_interval(self.config.push_pull_interval, self.live_count());
            self.next_push_pull = add(now, interval);
            if let Some(to) = self.random_member(|m| m.state == NodeState::Alive) {
                out.push(Output::PushPull { to, join: false });
            }
        }
        if now >= self.next_reconnect {
            self.next_reconnect = add(now, self.config.reconnect_interval);
            if let Some(to) = self.random_dead() {
                out.push(Output::PushPull { to, join: true });
            }
        }
        out
    }

    /// The earliest time [`tick`](Self::tick) has something to do: the shell (or the
    /// simulator) may sleep until then unless a message comes in.
    pub fn next_wake(&self) -> Timestamp {
        let probes = self.probes.values().map(|p| {
            if !p.escalated {
                p.direct_deadline
            } else {
                p.deadline
            }
        });
        let relays = self.relays.values().map(|r| r.deadline);
        let suspicions = self.suspicions.next_deadline();
        let gossip = (!self.broadcasts.is_empty()).then_some(self.next_gossip);
        // While a probe runs, its own deadlines (above) are the probe's wake-ups.
        let probe = self.probes.is_empty().then_some(self.next_probe);
        [self.next_push_pull, self.next_reconnect]
            .into_iter()
            .chain(probe)
            .chain(gossip)
            .chain(probes)
            .chain(relays)
            .chain(suspicions)
            .min()
            .unwrap_or(self.next_probe)
    }

    fn random_member(&mut self, wanted: impl Fn(&Member) -> bool) -> Option<SocketAddr> {
        let candidates: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| wanted(m))
            .map(|m| m.addr)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = (self.next_random() % candidates.len() as u64) as usize;
        Some(candidates[i])
    }

    /// A random dead (not left) member, from `dead_since`, which holds exactly those: a
    /// healthy cluster is not scanned every `reconnect_interval`.
    fn random_dead(&mut self) -> Option<SocketAddr> {
        if self.dead_since.is_empty() {
            return None;
        }
        let i = (self.next_random() % self.dead_since.len() as u64) as usize;
        let name = self.dead_since.keys().nth(i)?;
        self.members.get(name).map(|m| m.addr)
    }

    /// Queued news to `gossip_nodes` random members (live ones, and the recently dead).
    fn gossip(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        if self.broadcasts.is_empty() {
            return;
        }
        let targets = self.gossip_targets(now);
        let limit = self.retransmit_limit();
        for to in targets {
            let messages = self.broadcasts.take(
                self.config.piggyback,
                self.config.packet_size - COMPOUND_OVERHEAD,
                limit,
            );
            if messages.is_empty() {
                break;
            }
            out.push(Output::Send { to, messages });
        }
    }

    /// Whether `m` gets gossip: live, or dead for less than `gossip_to_dead`.
    fn gets_gossip(&self, m: &Member, now: Timestamp) -> bool {
        match m.state {
            NodeState::Alive | NodeState::Suspect => true,
            NodeState::Dead => self.dead_since.get(&m.name).is_some_and(|at| {
                Duration::from_nanos(now.saturating_sub_nanos(*at)) < self.config.gossip_to_dead
            }),
            NodeState::Left => false,
        }
    }

    /// `gossip_nodes` distinct random members that get gossip. Drawn at random, at most
    /// 3·n draws, like memberlist's `kRandomNodes`: listing a large cluster for every round
    /// was most of its gossip cost. If the draws find too few (a small or mostly dead
    /// cluster), all of them are listed and the first of a Fisher–Yates shuffle taken.
    fn gossip_targets(&mut self, now: Timestamp) -> Vec<SocketAddr> {
        let k = self.config.gossip_nodes;
        let n = self.names.len();
        let mut targets: Vec<SocketAddr> = Vec::with_capacity(k);
        for _ in 0..3 * n {
            if targets.len() == k {
                return targets;
            }
            let i = (self.next_random() % n as u64) as usize;
            if let Some(m) = self.members.get(&self.names[i])
                && self.gets_gossip(m, now)
                && !targets.contains(&m.addr)
            {
                targets.push(m.addr);
            }
        }
        if targets.len() == k {
            return targets;
        }
        let mut targets: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| self.gets_gossip(m, now))
            .map(|m| m.addr)
            .collect();
        let k = k.min(targets.len());
        for i in 0..k {
            let j = i + (self.next_random() % (targets.len() - i) as u64) as usize;
            targets.swap(i, j);
        }
        targets.truncate(k);
        targets
    }

    fn probe_next(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        let Some(target) = self.next_target() else {
            return;
        };
        let Some(member) = self.members.get(&target).cloned() else {
            return;
        };
        let seq = self.next_seq();
        let probe = Probe {
            target: target.clone(),
            // Not stretched by local health, as in memberlist: waiting longer for a UDP ack
            // that was lost does not bring it; the indirect probes (and their nacks) get the
            // stretched time instead.
            direct_deadline: add(now, self.config.probe_timeout),
            deadline: add(now, self.scaled(self.config.probe_interval)),
            escalated: false,
            indirect_sent: 0,
            nacks: 0,
            refused: false,
        };
        self.probes.insert(seq, probe);
        let ping = Message::Ping(Ping {
            seq_no: seq,
            node: target,
            source_addr: Some(self.me.addr.ip()),
            source_port: self.me.addr.port(),
            source_node: self.me.name.clone(),
        });
        // Lifeguard's buddy system (memberlist does it too): a suspected member hears of its
        // suspicion with the probe, so it can refute at once if it is alive.
        let mut messages = vec![ping];
        if member.state == NodeState::Suspect {
            messages.push(Message::Suspect(Suspect {
                incarnation: member.incarnation,
                node: member.name.clone(),
                from: self.me.name.clone(),
            }));
        }
        self.send_all(member.addr, messages, out);
    }

    /// The next member of the round (alive or suspected), reshuffling at the end of a round.
    fn next_target(&mut self) -> Option<String> {
        if let Some(name) = self.expedite.take()
            && self.is_live(&name)
        {
            return Some(name);
        }
        for _ in 0..2 {
            while self.next_in_order < self.order.len() {
                let name = self.order[self.next_in_order].clone();
                self.next_in_order += 1;
                if self
                    .members
                    .get(&name)
                    .is_some_and(|m| matches!(m.state, NodeState::Alive | NodeState::Suspect))
                {
                    return Some(name);
                }
            }
            let mut order: Vec<String> = self.members.keys().cloned().collect();
            for i in (1..order.len()).rev() {
                let j = (self.next_random() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            self.order = order;
            self.next_in_order = 0;
        }
        None
    }

    fn expire_probes(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        let seqs: Vec<u32> = self.probes.keys().copied().collect();
        for seq in seqs {
            let Some(probe) = self.probes.get(&seq).cloned() else {
                continue;
            };
            // Refused (no direct ack can come) and every relay said it heard nothing: no ack
            // can come at all, so waiting out the interval would only delay the suspicion.
            let hopeless = probe.refused && probe.escalated && probe.nacks >= probe.indirect_sent;
            if now >= probe.deadline || hopeless {
                self.probes.remove(&seq);
                // Missed: this node may be the slow one. Nacks say the relays heard nothing
                // either, which points at the target rather than at us.
                let missing_nacks = probe.indirect_sent.saturating_sub(probe.nacks);
                self.adjust_awareness(
                    1 + missing_nacks as i64 - i64::from(probe.indirect_sent > 0),
                );
                if let Some(m) = self.members.get(&probe.target).cloned() {
                    let suspect = Suspect {
                        incarnation: m.incarnation,
                        node: m.name,
                        from: self.me.name.clone(),
                    };
                    self.on_suspect(now, suspect, out);
                }
            } else if now >= probe.direct_deadline && !probe.escalated {
                self.probe_indirectly(seq, &probe, out);
            }
        }
    }

    fn probe_indirectly(&mut self, seq: u32, probe: &Probe, out: &mut Vec<Output>) {
        let Some(target) = self.members.get(&probe.target).cloned() else {
            return;
        };
        // Their addresses only: cloning every member to pick three is most of the cost.
        let mut helpers: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.name != target.name && m.state == NodeState::Alive)
            .map(|m| m.addr)
            .collect();
        for i in (1..helpers.len()).rev() {
            let j = (self.next_random() % (i as u64 + 1)) as usize;
            helpers.swap(i, j);
        }
        helpers.truncate(self.config.indirect_checks);
        for &helper in &helpers {
            let request = IndirectPing {
                seq_no: seq,
                target: target.addr.ip(),
                port: target.addr.port(),
                node: target.name.clone(),
                nack: true,
                source_addr: Some(self.me.addr.ip()),
                source_port: self.me.addr.port(),
                source_node: self.me.name.clone(),
            };
            self.send(helper, Message::IndirectPing(request), out);
        }
        if let Some(p) = self.probes.get_mut(&seq) {
            p.escalated = true;
            p.indirect_sent = helpers.len();
        }
    }

    fn expire_relays(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        self.end_relays(|r| now >= r.deadline, out);
    }

    /// Ends the relayed pings `done` says are over, with a nack to their origin when it
    /// asked for one: nothing came back from the target.
    fn end_relays(&mut self, done: impl Fn(&Relay) -> bool, out: &mut Vec<Output>) {
        let over: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| done(r))
            .map(|(s, _)| *s)
            .collect();
        for seq in over {
            if let Some(relay) = self.relays.remove(&seq)
                && relay.nack
            {
                self.send(
                    relay.origin,
                    Message::Nack(Nack {
                        seq_no: relay.origin_seq,
                    }),
                    out,
                );
            }
        }
    }

    fn expire_suspicions(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        for name in self.suspicions.take_expired(now) {
            if let Some(m) = self.members.get(&name).cloned()
                && m.state == NodeState::Suspect
            {
                self.on_dead(
                    now,
                    Dead {
                        incarnation: m.incarnation,
                        node: name,
                        from: self.me.name.clone(),
                    },
                    out,
                );
            }
        }
    }

    // ---- messages --------------------------------------------------------------------

    /// Handles one message that came from `from`.
    pub fn handle(&mut self, now: Timestamp, from: SocketAddr, message: Message) -> Vec<Output> {
        let mut out = Vec::new();
        match message {
            Message::Ping(ping) => {
                // A ping for another name is for a node that was here before: not ours.
                if ping.node.is_empty() || ping.node == self.me.name {
                    let to = match ping.source_addr {
                        Some(ip) if ping.source_port != 0 => SocketAddr::new(ip, ping.source_port),
                        _ => from,
                    };
                    self.send(
                        to,
                        Message::Ack(Ack {
                            seq_no: ping.seq_no,
                            payload: Vec::new(),
                        }),
                        &mut out,
                    );
                }
            }
            Message::IndirectPing(req) => {
                let seq = self.next_seq();
                let origin = match req.source_addr {
                    Some(ip) if req.source_port != 0 => SocketAddr::new(ip, req.source_port),
                    _ => from,
                };
                self.relays.insert(
                    seq,
                    Relay {
                        origin,
                        origin_seq: req.seq_no,
                        nack: req.nack,
                        // 80 % of the probe timeout: the origin's probe ends one probe
                        // interval after it started (two timeouts in the default profile), so
                        // a nack sent after a full timeout would arrive just too late to tell
                        // the origin that the target, not itself, is at fault (memberlist's
                        // origin waits on past that, through its TCP fallback ping).
                        deadline: add(now, self.config.probe_timeout.mul_f64(0.8)),
                        target: SocketAddr::new(req.target, req.port),
                    },
                );
                let ping = Ping {
                    seq_no: seq,
                    node: req.node,
                    source_addr: Some(self.me.addr.ip()),
                    source_port: self.me.addr.port(),
                    source_node: self.me.name.clone(),
                };
                self.send(
                    SocketAddr::new(req.target, req.port),
                    Message::Ping(ping),
                    &mut out,
                );
            }
            Message::Ack(ack) => {
                if let Some(relay) = self.relays.remove(&ack.seq_no) {
                    self.send(
                        relay.origin,
                        Message::Ack(Ack {
                            seq_no: relay.origin_seq,
                            payload: ack.payload,
                        }),
                        &mut out,
                    );
                } else if self.probes.remove(&ack.seq_no).is_some() {
                    self.adjust_awareness(-1);
                }
            }
            Message::Nack(nack) => {
                if let Some(p) = self.probes.get_mut(&nack.seq_no) {
                    p.nacks += 1;
                    if p.refused {
                        self.expire_probes(now, &mut out);
                    }
                }
            }
            Message::Alive(alive) => {
                let addr = SocketAddr::new(alive.addr, alive.port);
                self.on_alive(now, alive, addr, &mut out);
            }
            Message::Suspect(s) => self.on_suspect(now, s, &mut out),
            Message::Dead(d) => self.on_dead(now, d, &mut out),
            Message::User(payload) => out.push(Output::User { from, payload }),
            Message::Err(_) => {}
        }
        out
    }

    /// The network reported `addr` unreachable: an ICMP port or host unreachable came back
    /// for a packet sent there (the shell reads them from its socket's error queue). On its
    /// own it proves nothing, so nobody is suspected for it; but a probe of that address need
    /// not wait for a direct ack that cannot come: it asks for indirect probes at once, and
    /// it concludes as soon as every relay has nacked. A ping relayed there is nacked at once.
    /// So a member whose process died on a live host (a crash, a SIGKILL) is suspected about
    /// a probe interval sooner than memberlist does; a host that went silent is not.
    pub fn unreachable(&mut self, now: Timestamp, addr: SocketAddr) -> Vec<Output> {
        let mut out = Vec::new();
        let probing: Vec<(u32, Probe)> = self
            .probes
            .iter()
            .filter(|(_, p)| {
                !p.refused && self.members.get(&p.target).is_some_and(|m| m.addr == addr)
            })
            .map(|(seq, p)| (*seq, p.clone()))
            .collect();
        for (seq, probe) in probing {
            if let Some(p) = self.probes.get_mut(&seq) {
                p.refused = true;
            }
            if !probe.escalated {
                self.probe_indirectly(seq, &probe, &mut out);
            }
        }
        self.end_relays(|r| r.target == addr, &mut out);
        self.expire_probes(now, &mut out);
        out
    }

    fn on_alive(&mut self, _now: Timestamp, alive: Alive, addr: SocketAddr, out: &mut Vec<Output>) {
        if alive.node == self.me.name {
            // Someone has an older or conflicting view of us: say we are alive, newer.
            if alive.incarnation >= self.me.incarnation && alive.addr != self.me.addr.ip() {
                self.refute(alive.incarnation);
            }
            return;
        }
        let name = alive.node.clone();
        match self.members.get_mut(&name) {
            None => {
                self.members.insert(
                    name.clone(),
                    Member {
                        name: name.clone(),
                        addr,
                        meta: alive.meta.clone(),
                        incarnation: alive.incarnation,
                        state: NodeState::Alive,
                    },
                );
                self.live += 1;
                self.names.push(name.clone());
                out.push(Output::Event(Event::Joined(name.clone())));
            }
            Some(m) => {
                // Only a newer incarnation changes a known member (memberlist's `aliveNode`):
                // a suspected one is cleared by its own refutation, not by an alive message
                // or a push/pull of someone who has not heard of the suspicion yet — that
                // would restart the suspicion again and again and a dead member might never
                // be declared dead.
                if alive.incarnation <= m.incarnation {
                    return;
                }
                let was = m.state;
                m.incarnation = alive.incarnation;
                m.addr = addr;
                m.meta = alive.meta.clone();
                m.state = NodeState::Alive;
                if matches!(was, NodeState::Dead | NodeState::Left) {
                    self.live += 1;
                }
                self.suspicions.remove(&name);
                self.dead_since.remove(&name);
                if was != NodeState::Alive {
                    out.push(Output::Event(Event::Recovered(name.clone())));
                }
            }
        }
        self.broadcasts
            .queue(About::Node(name.clone()), Message::Alive(alive));
    }

    fn on_suspect(&mut self, now: Timestamp, s: Suspect, out: &mut Vec<Output>) {
        if s.node == self.me.name {
            // Only news about our current incarnation needs an answer: older accusations are
            // already refuted by what we said since.
            if s.incarnation >= self.me.incarnation {
                self.refute(s.incarnation);
            }
            return;
        }
        let n = self.live_count();
        let config = self.config;
        let Some(m) = self.members.get_mut(&s.node) else {
            return;
        };
        if s.incarnation < m.incarnation || matches!(m.state, NodeState::Dead | NodeState::Left) {
            return;
        }
        match m.state {
            NodeState::Suspect => {
                // An independent confirmation shortens the timeout and is passed on. Our own
                // failed probe of a member someone else suspected first is one too
                // (memberlist's `suspectNode`); the suspicion's set keeps anyone, us
                // included, from counting twice.
                if self.suspicions.confirm(&s.node, &s.from) {
                    self.broadcasts
                        .queue(About::Node(s.node.clone()), Message::Suspect(s));
                }
            }
            _ => {
                m.state = NodeState::Suspect;
                m.incarnation = s.incarnation;
                let suspicion = Suspicion::new(&config, n, now, &s.from);
                self.suspicions.insert(s.node.clone(), suspicion);
                if s.from != self.me.name && self.should_expedite(n) {
                    self.expedite = Some(s.node.clone());
                }
                out.push(Output::Event(Event::Suspected(s.node.clone())));
                self.broadcasts
                    .queue(About::Node(s.node.clone()), Message::Suspect(s));
            }
        }
    }

    fn on_dead(&mut self, now: Timestamp, d: Dead, out: &mut Vec<Output>) {
        if d.node == self.me.name {
            if d.from != self.me.name && d.incarnation >= self.me.incarnation {
                self.refute(d.incarnation);
            }
            return;
        }
        let Some(m) = self.members.get_mut(&d.node) else {
            return;
        };
        if d.incarnation < m.incarnation || matches!(m.state, NodeState::Dead | NodeState::Left) {
            return;
        }
        let left = d.from == d.node;
        m.state = if left {
            NodeState::Left
        } else {
            NodeState::Dead
        };
        m.incarnation = d.incarnation;
        // It was alive or suspected (the dead and the left returned above).
        self.live -= 1;
        self.suspicions.remove(&d.node);
        if !left {
            self.dead_since.insert(d.node.clone(), now);
        }
        out.push(Output::Event(if left {
            Event::Left(d.node.clone())
        } else {
            Event::Failed(d.node.clone())
        }));
        self.broadcasts
            .queue(About::Node(d.node.clone()), Message::Dead(d));
    }

    /// Whether to probe a member someone else just suspected at our next probe, out of turn.
    /// Lifeguard's timeout shrinks only with independent confirmations, and in a round robin
    /// they come when the others' rounds happen to reach the suspect: in a small cluster that
    /// can take most of the timeout, and then every member waits out the longer timeout.
    /// About `2·(k + 1)` members answer the call, whatever the cluster's size (each with
    /// probability `2·(k + 1) / (n − 2)`), so a large cluster does not flood the suspect.
    fn should_expedite(&mut self, n: usize) -> bool {
        let wanted = 2 * (u64::from(self.config.suspicion_mult.saturating_sub(2)) + 1);
        let others = n.saturating_sub(2).max(1) as u64;
        wanted >= others || self.next_random() % others < wanted
    }

    /// Someone thinks we are suspect or dead: outbid them with a higher incarnation.
    fn refute(&mut self, accused: u32) {
        self.me.incarnation = self.me.incarnation.max(accused) + 1;
        // Being accused is a hint that we are the slow one.
        self.adjust_awareness(1);
        self.broadcast_alive_self();
    }

    /// Leaving: tells the others (the shell sends what comes out before it stops).
    pub fn leave(&mut self) -> Vec<Output> {
        self.me.incarnation += 1;
        let dead = Dead {
            incarnation: self.me.incarnation,
            node: self.me.name.clone(),
            from: self.me.name.clone(),
        };
        self.broadcasts.queue(
            About::Node(self.me.name.clone()),
            Message::Dead(dead.clone()),
        );
        let targets: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.state == NodeState::Alive)
            .map(|m| m.addr)
            .collect();
        let mut out = Vec::new();
        for to in targets {
            self.send(to, Message::Dead(dead.clone()), &mut out);
        }
        out
    }
}
