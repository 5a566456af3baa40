//! The membership core on a small deterministic simulator: nodes exchange messages over a
//! virtual network with a fixed latency and seeded loss, on a virtual clock.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::*;

const STEP_MS: u64 = 50;
const LATENCY_MS: u64 = 1;

struct Sim {
    nodes: Vec<Membership>,
    up: Vec<bool>,
    /// Of the nodes not up, those whose host answers with port unreachables (a process that
    /// died on a live host): a packet to one is reported to its sender.
    refuses: Vec<bool>,
    /// (deliver at, to, from, message)
    queue: VecDeque<(u64, usize, SocketAddr, Message)>,
    now_ms: u64,
    rng: u64,
    loss: f64,
    events: Vec<(usize, Event)>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7946))
}

impl Sim {
    fn new(n: usize, loss: f64, seed: u64) -> Sim {
        let nodes = (0..n)
            .map(|i| {
                Membership::new(
                    Config::default(),
                    &format!("node{i}"),
                    addr(i),
                    Vec::new(),
                    seed + i as u64,
                )
            })
            .collect();
        let mut sim = Sim {
            nodes,
            up: vec![true; n],
            refuses: vec![false; n],
            queue: VecDeque::new(),
            now_ms: 0,
            rng: seed | 1,
            loss,
            events: Vec::new(),
        };
        // Everyone joins through node 0 with a push/pull exchange, as `join` does.
        for i in 1..n {
            let theirs = sim.nodes[i].local_state();
            let ours = sim.nodes[0].local_state();
            let now = sim.now();
            let out = sim.nodes[0].merge_remote_state(now, theirs);
            sim.absorb(0, out);
            let out = sim.nodes[i].merge_remote_state(now, ours);
            sim.absorb(i, out);
        }
        sim
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms * 1_000_000)
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn absorb(&mut self, from: usize, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, messages } => {
                    let Some(target) = (0..self.nodes.len()).find(|&i| addr(i) == to) else {
                        continue;
                    };
                    if self.random() < self.loss {
                        continue;
                    }
                    for m in messages {
                        self.queue
                            .push_back((self.now_ms + LATENCY_MS, target, addr(from), m));
                    }
                }
                Output::Event(e) => self.events.push((from, e)),
                Output::PushPull { to, .. } => {
                    // A stream exchange, done at once if both ends are up.
                    let Some(peer) = (0..self.nodes.len()).find(|&i| addr(i) == to) else {
                        continue;
                    };
                    if !self.up[from] || !self.up[peer] {
                        continue;
                    }
                    let now = self.now();
                    let (ours, theirs) = (
                        self.nodes[from].local_state(),
                        self.nodes[peer].local_state(),
                    );
                    let out = self.nodes[peer].merge_remote_state(now, ours);
                    self.absorb(peer, out);
                    let out = self.nodes[from].merge_remote_state(now, theirs);
                    self.absorb(from, out);
                }
                Output::User { .. } => {}
            }
        }
    }

    fn run(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += STEP_MS;
            let now = self.now();
            // Deliver what is due (latency is below a step: everything queued so far).
            while let Some((at, to, from, m)) = self.queue.pop_front() {
                if at > self.now_ms {
                    self.queue.push_front((at, to, from, m));
                    break;
                }
                let from_index = (0..self.nodes.len()).find(|&i| addr(i) == from).unwrap();
                if !self.up[from_index] {
                    continue;
                }
                if !self.up[to] {
                    if self.refuses[to] {
                        let out = self.nodes[from_index].unreachable(now, addr(to));
                        self.absorb(from_index, out);
                    }
                    continue;
                }
                let out = self.nodes[to].handle(now, from, m);
                self.absorb(to, out);
            }
            for i in 0..self.nodes.len() {
                if self.up[i] {
                    let out = self.nodes[i].tick(now);
                    self.absorb(i, out);
                }
            }
        }
    }

    fn state_of(&self, observer: usize, node: usize) -> NodeState {
        self.nodes[observer]
            .member(&format!("node{node}"))
            .map_or(NodeState::Dead, |m| m.state)
    }

    fn failed_events(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Failed(_)))
            .count()
    }
}

#[test]
fn twenty_nodes_converge_to_everyone_alive() {
    let mut sim = Sim::new(20, 0.0, 7);
    sim.run(5_000);
    for a in 0..20 {
        for b in (0..20).filter(|b| *b != a) {
            assert_eq!(
                sim.state_of(a, b),
                NodeState::Alive,
                "node{a} about node{b}"
            );
        }
    }
    assert_eq!(sim.failed_events(), 0);
}

#[test]
fn a_silent_node_is_suspected_then_declared_dead_by_everyone() {
    // memberlist's LAN detection: a probe round (≤ n seconds), then the probe's interval.
    let after = first_suspicion_of_a_stopped_node(false);
    assert!(
        after <= 12_000 + 1_000,
        "first suspected {after} ms after it stopped"
    );
}

#[test]
fn at_one_percent_loss_no_healthy_node_is_declared_dead_for_ten_minutes() {
    let mut sim = Sim::new(20, 0.01, 3);
    sim.run(600_000);
    assert_eq!(
        sim.failed_events(),
        0,
        "{:?}",
        sim.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Failed(_)))
            .collect::<Vec<_>>()
    );
    for a in 0..20 {
        for b in (0..20).filter(|b| *b != a) {
            assert_eq!(sim.state_of(a, b), NodeState::Alive);
        }
    }
}

/// How long after node5 of a 12-node cluster stops the first member suspects it; its host
/// answers with port unreachables if `refuses`. Either way it ends dead everywhere, and
/// nobody else does.
fn first_suspicion_of_a_stopped_node(refuses: bool) -> u64 {
    let mut sim = Sim::new(12, 0.0, 11);
    sim.run(3_000);
    sim.up[5] = false;
    sim.refuses[5] = refuses;
    let stopped = sim.now_ms;
    let suspected = |sim: &Sim| {
        sim.events
            .iter()
            .any(|(_, e)| *e == Event::Suspected("node5".into()))
    };
    while !suspected(&sim) {
        assert!(sim.now_ms < stopped + 30_000, "node5 was never suspected");
        sim.run(STEP_MS);
    }
    let after = sim.now_ms - stopped;
    sim.run(40_000);
    for a in (0..12).filter(|a| *a != 5) {
        assert_eq!(sim.state_of(a, 5), NodeState::Dead, "node{a} about node5");
    }
    assert!(
        sim.events
            .iter()
            .all(|(_, e)| !matches!(e, Event::Failed(n) if n != "node5")),
        "nobody else was taken for dead"
    );
    after
}

#[test]
fn a_dead_process_whose_port_refuses_is_suspected_a_probe_interval_sooner() {
    // Same seed, same schedule until the first probe of node5: silent, that probe suspects at
    // the end of its interval (1 s); refused, once every relay has nacked (a few steps).
    let silent = first_suspicion_of_a_stopped_node(false);
    let refused = first_suspicion_of_a_stopped_node(true);
    assert!(
        refused + 700 <= silent,
        "refused: suspected at {refused} ms, silent: at {silent} ms"
    );
}

#[test]
fn an_accused_node_refutes_with_a_higher_incarnation() {
    let mut sim = Sim::new(8, 0.0, 5);
    sim.run(2_000);
    let before = sim.nodes[3].incarnation();
    let now = sim.now();
    let accusation = Suspect {
        incarnation: before,
        node: "node3".into(),
        from: "node0".into(),
    };
    let out = sim.nodes[0].handle(now, addr(0), Message::Suspect(accusation));
    sim.absorb(0, out);
    sim.run(5_000);
    assert!(sim.nodes[3].incarnation() > before, "node3 refuted");
    for a in (0..8).filter(|a| *a != 3) {
        assert_eq!(sim.state_of(a, 3), NodeState::Alive, "node{a} about node3");
        assert_eq!(
            sim.nodes[a].member("node3").unwrap().incarnation,
            sim.nodes[3].incarnation()
        );
    }
    assert_eq!(sim.failed_events(), 0);
}

#[test]
fn a_leaving_node_is_seen_as_left_not_failed() {
    let mut sim = Sim::new(6, 0.0, 9);
    sim.run(2_000);
    let out = sim.nodes[2].leave();
    sim.absorb(2, out);
    sim.run(500);
    sim.up[2] = false;
    sim.run(5_000);
    for a in (0..6).filter(|a| *a != 2) {
        assert_eq!(sim.state_of(a, 2), NodeState::Left, "node{a} about node2");
    }
    assert_eq!(sim.failed_events(), 0);
}

#[test]
fn suspicion_timeouts_shrink_with_confirmations() {
    let config = Config::default();
    let mut s = suspicion::Suspicion::new(&config, 100, Timestamp(0), "a");
    let first = s.timeout();
    assert!(s.confirm("b"));
    assert!(!s.confirm("b"), "the same voice twice is one confirmation");
    let second = s.timeout();
    assert!(s.confirm("c"));
    let third = s.timeout();
    assert!(
        first > second && second > third,
        "{first:?} {second:?} {third:?}"
    );
    // memberlist: min = 4 · log10(100) · 1 s = 8 s; max = 6 · min = 48 s.
    assert_eq!(first, Duration::from_secs(48));
    assert_eq!(third, Duration::from_secs(8));
}

#[test]
fn suspicions_expire_by_their_current_deadline() {
    let config = Config::default();
    let at = |secs: u64| Timestamp(secs * 1_000_000_000);
    let mut all = suspicion::Suspicions::default();
    // Started at 0 s and 10 s, 48 s each at first.
    all.insert(
        "x".into(),
        suspicion::Suspicion::new(&config, 100, at(0), "a"),
    );
    all.insert(
        "y".into(),
        suspicion::Suspicion::new(&config, 100, at(10), "a"),
    );
    assert_eq!(all.next_deadline(), Some(at(48)));
    // Two confirmations bring y's to its floor, 8 s after its start: it is now the first.
    assert!(all.confirm("y", "b") && all.confirm("y", "c"));
    assert!(!all.confirm("y", "c"), "counted once");
    assert!(!all.confirm("z", "b"), "no such suspicion");
    assert_eq!(all.next_deadline(), Some(at(18)));
    assert_eq!(all.take_expired(at(17)), Vec::<String>::new());
    assert_eq!(all.take_expired(at(18)), vec!["y".to_owned()]);
    all.remove("x");
    assert_eq!(all.next_deadline(), None);
    assert!(all.take_expired(at(1000)).is_empty());
}

/// A node that knows `others` members alive (merged as from a push/pull), at time 0.
fn lone(others: usize, seed: u64) -> Membership {
    let mut m = Membership::new(Config::default(), "node0", addr(0), Vec::new(), seed);
    let _ = m.merge_remote_state(Timestamp(0), alive_states(1..=others));
    m
}

/// Push/pull states of `node{i}` alive, for each `i`.
fn alive_states(nodes: std::ops::RangeInclusive<usize>) -> Vec<PushNodeState> {
    nodes
        .map(|i| PushNodeState {
            name: format!("node{i}"),
            addr: addr(i).ip(),
            port: addr(i).port(),
            meta: Vec::new(),
            incarnation: 1,
            state: NodeState::Alive,
            vsn: Some(VERSIONS),
        })
        .collect()
}

fn ms(t: u64) -> Timestamp {
    Timestamp(t * 1_000_000)
}

/// Ticks `m` at each wake-up it asks for until `end`; what came out, with when.
fn drive(m: &mut Membership, from: Timestamp, end: Timestamp) -> Vec<(Timestamp, Output)> {
    let mut got = Vec::new();
    let mut now = from;
    loop {
        let wake = m.next_wake().max(now);
        if wake > end {
            return got;
        }
        now = wake;
        got.extend(m.tick(now).into_iter().map(|o| (now, o)));
    }
}

/// The direct pings in `outputs`: when, and their sequence numbers.
fn pings(outputs: &[(Timestamp, Output)]) -> Vec<(Timestamp, u32)> {
    outputs
        .iter()
        .filter_map(|(t, o)| match o {
            Output::Send { messages, .. } => match messages.first() {
                Some(Message::Ping(p)) => Some((*t, p.seq_no)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn indirect_pings(outputs: &[(Timestamp, Output)]) -> Vec<Timestamp> {
    outputs
        .iter()
        .filter(|(_, o)| {
            matches!(o, Output::Send { messages, .. }
                if matches!(messages.first(), Some(Message::IndirectPing(_))))
        })
        .map(|(t, _)| *t)
        .collect()
}

/// Raises the local-health score to `score` the way it happens: accusations to refute.
fn accuse(m: &mut Membership, score: u32) {
    for _ in 0..score {
        let accusation = Suspect {
            incarnation: m.incarnation(),
            node: "node0".into(),
            from: "node1".into(),
        };
        let _ = m.handle(Timestamp(0), addr(1), Message::Suspect(accusation));
    }
    assert_eq!(m.awareness(), score);
}

#[test]
fn local_health_stretches_only_a_failing_probes_wait_as_memberlist_does() {
    // memberlist's probeNode: the ticker keeps its interval and the direct timeout is never
    // scaled; only the deadline of a probe nobody answers is (`ScaleTimeout(ProbeInterval)`),
    // and the next probe waits for it.
    let mut m = lone(4, 3);
    accuse(&mut m, 2);
    let out = drive(&mut m, Timestamp(0), ms(2_000));
    let (t0, seq) = pings(&out)[0];
    // Answered at once: one step healthier, and the next probe one base interval later.
    let _ = m.handle(
        t0,
        addr(1),
        Message::Ack(Ack {
            seq_no: seq,
            payload: Vec::new(),
        }),
    );
    assert_eq!(m.awareness(), 1);
    let out = drive(&mut m, t0, add(t0, Duration::from_millis(1_100)));
    let (t1, _) = pings(&out)[0];
    assert_eq!(t1, add(t0, Duration::from_secs(1)), "the base interval");

    // Not answered: indirect probes after the base 500 ms, suspicion only after the stretched
    // interval (2 × 1 s at awareness 1), and no other probe before that.
    let out = drive(&mut m, t1, add(t1, Duration::from_millis(2_500)));
    assert_eq!(
        indirect_pings(&out).first(),
        Some(&add(t1, Duration::from_millis(500)))
    );
    let suspected: Vec<Timestamp> = out
        .iter()
        .filter(|(_, o)| matches!(o, Output::Event(Event::Suspected(_))))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(suspected, vec![add(t1, Duration::from_secs(2))]);
    let next: Vec<Timestamp> = pings(&out).iter().map(|(t, _)| *t).collect();
    assert_eq!(
        next,
        vec![add(t1, Duration::from_secs(2))],
        "the next probe is held back until the failing one concludes, then starts at once"
    );
}

#[test]
fn nodes_started_together_probe_at_spread_phases() {
    // memberlist staggers its probe ticker by a random fraction of the interval: nodes that
    // start in the same instant do not all probe in the same millisecond.
    let firsts: Vec<Timestamp> = (1..=8)
        .map(|seed| {
            let mut m = lone(3, seed);
            let out = drive(&mut m, Timestamp(0), ms(2_000));
            pings(&out)[0].0
        })
        .collect();
    assert!(firsts.iter().all(|t| *t < ms(1_000)), "{firsts:?}");
    let (min, max) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
    assert!(max.0 - min.0 > 300_000_000, "{firsts:?}");
}

#[test]
fn a_relay_nacks_at_once_when_its_target_is_unreachable() {
    let mut relay = Membership::new(Config::default(), "relay", addr(1), Vec::new(), 3);
    let (origin, target) = (addr(0), addr(2));
    let request = IndirectPing {
        seq_no: 77,
        target: target.ip(),
        port: target.port(),
        node: "node2".into(),
        nack: true,
        source_addr: Some(origin.ip()),
        source_port: origin.port(),
        source_node: "node0".into(),
    };
    let out = relay.handle(Timestamp(0), origin, Message::IndirectPing(request));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { to, .. } if *to == target)),
        "the relay pings the target: {out:?}"
    );
    // A port unreachable for another address changes nothing.
    assert!(relay.unreachable(Timestamp(1), addr(3)).is_empty());
    let out = relay.unreachable(Timestamp(1), target);
    let nacked = out.iter().any(|o| {
        matches!(o, Output::Send { to, messages } if *to == origin
            && matches!(messages.first(), Some(Message::Nack(Nack { seq_no: 77 }))))
    });
    assert!(nacked, "a nack for the origin's sequence number: {out:?}");
    // Once: the relay is done with it, and its timeout sends nothing more.
    assert!(relay.unreachable(Timestamp(2), target).is_empty());
    let later = relay.tick(Timestamp(1_000_000_000));
    assert!(
        !later
            .iter()
            .any(|o| matches!(o, Output::Send { messages, .. }
            if messages.iter().any(|m| matches!(m, Message::Nack(_))))),
        "{later:?}"
    );
}

/// The first direct ping in `outputs`: when, to whom, its sequence number.
fn first_ping(outputs: &[(Timestamp, Output)]) -> Option<(Timestamp, SocketAddr, u32)> {
    outputs.iter().find_map(|(t, o)| match o {
        Output::Send { to, messages } => match messages.first() {
            Some(Message::Ping(p)) => Some((*t, *to, p.seq_no)),
            _ => None,
        },
        _ => None,
    })
}

/// Ticks `m` from `from` until it sends a probe (within 10 s): when, to whom, its sequence
/// number, and everything that came out with it.
fn next_probe(m: &mut Membership, from: Timestamp) -> (Timestamp, SocketAddr, u32, Vec<Output>) {
    let mut now = from;
    while now < add(from, Duration::from_secs(10)) {
        now = m.next_wake().max(now);
        let out: Vec<(Timestamp, Output)> = m.tick(now).into_iter().map(|o| (now, o)).collect();
        if let Some((t, to, seq)) = first_ping(&out) {
            return (t, to, seq, out.into_iter().map(|(_, o)| o).collect());
        }
    }
    panic!("no probe in 10 s")
}

fn ack(seq_no: u32) -> Message {
    Message::Ack(Ack {
        seq_no,
        payload: Vec::new(),
    })
}

fn suspected(outputs: &[Output]) -> Vec<&str> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Suspected(n)) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refused_probe_asks_relays_at_once_and_suspects_when_every_relay_nacked() {
    let mut m = lone(4, 3);
    let (t0, target, seq, _) = next_probe(&mut m, Timestamp(0));
    let name = m.members().find(|x| x.addr == target).unwrap().name.clone();
    // The port unreachable for the ping: the three other members are asked at once, not
    // after the 500 ms direct timeout.
    let out = m.unreachable(add(t0, Duration::from_millis(1)), target);
    let relays: Vec<SocketAddr> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, messages }
                if matches!(messages.first(), Some(Message::IndirectPing(_))) =>
            {
                Some(*to)
            }
            _ => None,
        })
        .collect();
    assert_eq!(relays.len(), 3, "{out:?}");
    assert!(!relays.contains(&target));
    // A second report for the same probe asks nobody again.
    assert!(
        m.unreachable(add(t0, Duration::from_millis(1)), target)
            .is_empty()
    );
    // Each relay's nack; the last one concludes the probe (no ack can come any more).
    for (i, relay) in relays.iter().enumerate() {
        let out = m.handle(
            add(t0, Duration::from_millis(2)),
            *relay,
            Message::Nack(Nack { seq_no: seq }),
        );
        let expected: Vec<&str> = if i == 2 { vec![name.as_str()] } else { vec![] };
        assert_eq!(suspected(&out), expected, "after nack {}", i + 1);
    }
    // Every relay answered: this node is not the slow one.
    assert_eq!(m.awareness(), 0);
}

#[test]
fn a_member_suspected_by_another_is_probed_next_and_told_of_it() {
    // 8 members: few enough that every member answers the call (2·(k + 1) = 6 ≥ n − 2).
    let mut m = lone(7, 5);
    let (t0, first, seq, _) = next_probe(&mut m, Timestamp(0));
    let _ = m.handle(t0, first, ack(seq));
    let accused = m.members().find(|x| x.addr != first).unwrap().clone();
    let accusation = Suspect {
        incarnation: accused.incarnation,
        node: accused.name.clone(),
        from: "node1".into(),
    };
    let out = m.handle(t0, addr(1), Message::Suspect(accusation));
    assert_eq!(suspected(&out), vec![accused.name.as_str()]);
    // The next probe, one interval later, is of the accused, with the suspicion along
    // (Lifeguard's buddy system), so that it can refute at once if it is alive.
    let (t1, to, _, out) = next_probe(&mut m, t0);
    assert_eq!((t1, to), (add(t0, Duration::from_secs(1)), accused.addr));
    let told = out.iter().any(|o| {
        matches!(o, Output::Send { to, messages } if *to == accused.addr
            && messages.iter().any(|x| matches!(x, Message::Suspect(s) if s.node == accused.name)))
    });
    assert!(told, "{out:?}");
}

#[test]
fn nodes_started_together_push_pull_at_spread_times() {
    // memberlist's push/pull ticker starts after a random stagger within the interval.
    // Every probe is answered, so the members stay alive to push/pull with.
    let first_push_pull = |seed: u64| {
        let mut m = lone(3, seed);
        let mut now = Timestamp(0);
        while now < ms(30_000) {
            now = m.next_wake().max(now);
            for o in m.tick(now) {
                match o {
                    Output::PushPull { join: false, .. } => return now,
                    Output::Send { to, messages } => {
                        if let Some(Message::Ping(p)) = messages.first() {
                            let _ = m.handle(now, to, ack(p.seq_no));
                        }
                    }
                    _ => {}
                }
            }
        }
        panic!("seed {seed}: no push/pull within the 30 s interval")
    };
    let firsts: Vec<Timestamp> = (1..=8).map(first_push_pull).collect();
    let (min, max) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
    assert!(max.0 - min.0 > 5_000_000_000, "{firsts:?}");
}

#[test]
fn a_push_pull_that_introduces_members_tells_them_directly_that_we_are_alive() {
    let alive_to = |out: &[Output]| -> Vec<SocketAddr> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, messages }
                    if matches!(messages.first(), Some(Message::Alive(a)) if a.node == "node0") =>
                {
                    Some(*to)
                }
                _ => None,
            })
            .collect()
    };
    let mut m = Membership::new(Config::default(), "node0", addr(0), Vec::new(), 1);
    // A join into 7 members: each of them hears from us at once.
    let mut told = alive_to(&m.merge_remote_state(Timestamp(0), alive_states(1..=7)));
    told.sort();
    assert_eq!(told, (1..=7).map(addr).collect::<Vec<_>>());
    // The same members again: nobody new, nobody told.
    assert!(alive_to(&m.merge_remote_state(ms(10), alive_states(1..=7))).is_empty());
    // 100 new ones: a bounded burst, to distinct members among them.
    let mut told = alive_to(&m.merge_remote_state(ms(20), alive_states(8..=107)));
    assert_eq!(told.len(), ANNOUNCE_MAX);
    told.sort();
    told.dedup();
    assert_eq!(told.len(), ANNOUNCE_MAX);
    assert!(told.iter().all(|a| (8..=107).map(addr).any(|b| b == *a)));
}
