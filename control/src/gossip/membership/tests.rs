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
                if !self.up[to] || !self.up[from_index] {
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
    let mut sim = Sim::new(12, 0.0, 11);
    sim.run(3_000);
    sim.up[5] = false;
    // memberlist's LAN detection: a probe round (≤ n seconds) plus the suspicion timeout.
    sim.run(40_000);
    for a in (0..12).filter(|a| *a != 5) {
        assert_eq!(sim.state_of(a, 5), NodeState::Dead, "node{a} about node5");
    }
    assert!(
        sim.events
            .iter()
            .any(|(_, e)| *e == Event::Suspected("node5".into()))
    );
    // Nobody else was taken for dead.
    assert!(
        sim.events
            .iter()
            .all(|(_, e)| !matches!(e, Event::Failed(n) if n != "node5"))
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
