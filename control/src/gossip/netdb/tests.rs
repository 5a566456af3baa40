//! The composed core's own rules, on a few cores wired by hand (the big scenarios, with loss,
//! partitions and a thousand nodes, are the simulator's: `tests/tests/gossip_sim.rs`).

#![allow(clippy::unwrap_used)]

use super::*;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7946))
}

fn at(ms: u64) -> Timestamp {
    Timestamp(ms * 1_000_000)
}

fn key(network: &str, k: &str) -> Key {
    Key {
        network: network.into(),
        table: "peers".into(),
        key: k.into(),
    }
}

/// Cores 0..n joined through core 0 with push/pulls, all outputs carried out at once.
struct Wired {
    dbs: Vec<NetDb>,
    /// (from, to, network) of every table batch sent
    batches: Vec<(usize, usize, String)>,
    streams: usize,
}

impl Wired {
    fn new(n: usize) -> Wired {
        let dbs = (0..n)
            .map(|i| NetDb::new(Config::default(), &format!("n{i}"), addr(i), i as u64 + 1))
            .collect();
        let mut w = Wired {
            dbs,
            batches: Vec::new(),
            streams: 0,
        };
        for i in 1..n {
            let out = w.dbs[i].join(&[addr(0)]);
            w.carry(i, at(0), out);
        }
        w
    }

    fn index(&self, a: SocketAddr) -> usize {
        (0..self.dbs.len()).find(|&i| addr(i) == a).unwrap()
    }

    fn carry(&mut self, from: usize, now: Timestamp, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, messages } => {
                    let to = self.index(to);
                    for m in messages {
                        if let Message::User(p) = &m
                            && let Ok(NetMessage::Changes { network, .. }) = NetMessage::decode(p)
                        {
                            self.batches.push((from, to, network));
                        }
                        let out = self.dbs[to].handle(now, addr(from), m);
                        self.carry(to, now, out);
                    }
                }
                Output::PushPull { to, .. } => {
                    let to = self.index(to);
                    let (nodes, user) = self.dbs[from].push_pull_state();
                    let (their_nodes, their_user) = self.dbs[to].push_pull_state();
                    let out = self.dbs[to].merge_push_pull(now, nodes, &user);
                    self.carry(to, now, out);
                    let out = self.dbs[from].merge_push_pull(now, their_nodes, &their_user);
                    self.carry(from, now, out);
                }
                Output::Stream { to, payload } => {
                    self.streams += 1;
                    let to = self.index(to);
                    let (answer, out) = self.dbs[to].handle_stream(now, &payload);
                    self.carry(to, now, out);
                    if let Some(answer) = answer {
                        let (_, out) = self.dbs[from].handle_stream(now, &answer);
                        self.carry(from, now, out);
                    }
                }
                Output::Member(_) | Output::Table(_) => {}
            }
        }
    }

    fn run(&mut self, from_ms: u64, to_ms: u64) {
        for ms in (from_ms..to_ms).step_by(50) {
            for i in 0..self.dbs.len() {
                let out = self.dbs[i].tick(at(ms));
                self.carry(i, at(ms), out);
            }
        }
    }
}

#[test]
fn a_networks_changes_go_to_its_nodes_only() {
    let mut w = Wired::new(5);
    for i in 0..3 {
        w.dbs[i].join_network("blue");
    }
    w.dbs[3].join_network("red");
    w.run(0, 2_000);
    let out = w.dbs[0]
        .write(at(2_000), key("blue", "n0"), Some(b"x".to_vec()))
        .unwrap();
    assert!(matches!(
        out.as_slice(),
        [Output::Table(tables::Event::Put { .. })]
    ));
    w.run(2_000, 5_000);
    for i in 0..3 {
        assert_eq!(
            w.dbs[i].tables().get(&key("blue", "n0")),
            Some(("n0", &b"x"[..])),
            "n{i}"
        );
    }
    assert!(!w.batches.is_empty());
    assert!(
        w.batches.iter().all(|(_, to, n)| n == "blue" && *to < 3),
        "blue's batches went to blue's nodes only: {:?}",
        w.batches
    );
    assert_eq!(w.dbs[3].tables().stored() + w.dbs[4].tables().stored(), 0);
    assert!(
        w.dbs.iter().all(|d| d.queued() == 0),
        "every change was sent its count and left the queues"
    );
    // Writing to a network this node is not on is refused with the network named.
    let err = w.dbs[4]
        .write(at(5_000), key("blue", "n4"), None)
        .unwrap_err();
    assert!(err.to_string().contains("network blue"), "{err}");
}

#[test]
fn a_late_joiner_gets_the_network_by_bulk_sync_from_a_few_peers() {
    let mut w = Wired::new(6);
    for i in 0..5 {
        w.dbs[i].join_network("blue");
    }
    w.run(0, 1_000);
    for i in 0..5 {
        let out = w.dbs[i]
            .write(
                at(1_000),
                key("blue", &format!("n{i}")),
                Some(vec![i as u8]),
            )
            .unwrap();
        w.carry(i, at(1_000), out);
    }
    w.run(1_000, 5_000);
    let before = w.streams;
    let out = w.dbs[5].join_network("blue");
    assert_eq!(
        out.len(),
        Config::default().join_sync_peers,
        "a bulk sync with a few of blue's five nodes, not all"
    );
    w.carry(5, at(5_000), out);
    assert_eq!(w.streams - before, 3);
    for i in 0..5 {
        assert_eq!(
            w.dbs[5]
                .tables()
                .get(&key("blue", &format!("n{i}")))
                .map(|e| e.1),
            Some(&[i as u8][..])
        );
    }
}

#[test]
fn a_failed_nodes_entries_are_hidden_then_shown_when_it_recovers() {
    let mut w = Wired::new(3);
    for i in 0..3 {
        w.dbs[i].join_network("blue");
    }
    w.run(0, 1_000);
    let out = w.dbs[2]
        .write(at(1_000), key("blue", "n2"), Some(vec![2]))
        .unwrap();
    w.carry(2, at(1_000), out);
    w.run(1_000, 3_000);
    assert!(w.dbs[0].tables().get(&key("blue", "n2")).is_some());
    let dead = Message::Dead(crate::gossip::wire::Dead {
        incarnation: 1,
        node: "n2".into(),
        from: "n1".into(),
    });
    let out = w.dbs[0].handle(at(3_000), addr(1), dead);
    assert!(out.contains(&Output::Table(tables::Event::Deleted {
        key: key("blue", "n2")
    })));
    assert!(w.dbs[0].tables().get(&key("blue", "n2")).is_none());
    // n2 hears of its death (a push/pull with n0, as after a partition) and refutes it.
    w.run(3_000, 10_000);
    assert!(w.dbs[0].membership().is_live("n2"));
    assert_eq!(
        w.dbs[0].tables().get(&key("blue", "n2")),
        Some(("n2", &[2][..]))
    );
}
