#![allow(clippy::unwrap_used)]
//! A shoal gossip node in a cluster of three real Serf agents (memberlist inside), on
//! loopback: it joins them and they list it alive; a Serf agent killed with SIGKILL is marked
//! dead by shoal; a shoal node that stops is marked failed by Serf — within memberlist's
//! default detection time. Plain and with `-encrypt`.
//!
//! Skipped, saying so, only when the `serf` binary is missing (CI installs it).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{LOOPBACK, Serf, eventually, free_port, serf_installed};
use control::gossip::netdb::Config;
use control::gossip::shell::{GossipConfig, GossipNode};
use control::gossip::wire::{Key, Keyring, NodeState};

fn cluster(key: Option<&str>) {
    if !serf_installed() {
        eprintln!("SKIPPED: the `serf` binary is not installed (apt-get install serf)");
        return;
    }
    let agents: Vec<Serf> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| Serf::start(n, key))
        .collect();
    assert!(
        eventually(10, || agents[1].join(agents[0].addr)
            && agents[2].join(agents[0].addr)),
        "the Serf agents form a cluster"
    );

    let keyring = key.map(|k| Keyring::new(Key::from_base64(k).unwrap()));
    let node = GossipNode::start(GossipConfig {
        name: "shoal".into(),
        bind: SocketAddr::new(LOOPBACK, free_port()),
        keyring,
        config: Config::default(),
    })
    .unwrap();
    assert_eq!(node.join(&[agents[0].addr]), 1, "s1 answered our push/pull");

    let alive_in_shoal = |name: &str| {
        node.members()
            .iter()
            .any(|m| m.name == name && m.state == NodeState::Alive)
    };
    assert!(
        eventually(15, || ["s1", "s2", "s3"].iter().all(|n| alive_in_shoal(n))),
        "{:?}",
        node.members()
    );
    for serf in &agents {
        assert!(
            eventually(15, || serf.members().get("shoal").map(String::as_str)
                == Some("alive")),
            "{:?}",
            serf.members()
        );
    }
    // Stays alive: Serf probes us and we answer (10 s of it).
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        agents[1].members().get("shoal").map(String::as_str),
        Some("alive")
    );

    // A Serf agent killed: shoal declares it dead.
    let mut agents = agents;
    let mut s3 = agents.pop().unwrap();
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    let dead_in_shoal = || {
        node.members()
            .iter()
            .any(|m| m.name == "s3" && m.state == NodeState::Dead)
    };
    assert!(
        eventually(40, dead_in_shoal),
        "s3 still {:?}",
        node.members()
    );

    // Shoal stops (no leave): Serf marks it failed.
    drop(node);
    for serf in &agents {
        assert!(
            eventually(40, || serf.members().get("shoal").map(String::as_str)
                == Some("failed")),
            "{:?}",
            serf.members()
        );
    }
}

#[test]
fn a_shoal_node_is_a_member_of_a_serf_cluster() {
    cluster(None);
}

#[test]
fn the_same_with_an_encrypted_cluster() {
    cluster(Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
}
