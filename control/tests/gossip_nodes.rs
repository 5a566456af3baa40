#![allow(clippy::unwrap_used)]
//! Two shoal gossip nodes on loopback (an encrypted cluster): they find each other, and bad
//! input on UDP and TCP — garbage, truncated messages, unknown types, the wrong key, an
//! oversized datagram — is refused and counted while the membership carries on.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::{LOOPBACK, eventually, free_port};
use control::gossip::netdb::Config;
use control::gossip::shell::{GossipConfig, GossipNode};
use control::gossip::wire::{Key, Keyring, Message, NodeState, Ping, encode, seal_packet};

fn node(name: &str, key: [u8; 32]) -> GossipNode {
    GossipNode::start(GossipConfig {
        name: name.into(),
        bind: SocketAddr::new(LOOPBACK, free_port()),
        keyring: Some(Keyring::new(Key::new(&key).unwrap())),
        config: Config::default(),
    })
    .unwrap()
}

#[test]
fn bad_input_is_counted_and_the_membership_carries_on() {
    let key = [7u8; 32];
    let a = node("a", key);
    let b = node("b", key);
    assert_eq!(b.join(&[a.addr()]), 1);
    let sees = |n: &GossipNode, other: &str| {
        n.members()
            .iter()
            .any(|m| m.name == other && m.state == NodeState::Alive)
    };
    assert!(eventually(10, || sees(&a, "b") && sees(&b, "a")));

    let udp = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    let ping = encode(&Message::Ping(Ping {
        seq_no: 1,
        node: "a".into(),
        source_addr: None,
        source_port: 0,
        source_node: String::new(),
    }));
    let other_key = Key::new(&[9u8; 32]).unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 40],                                        // not even a type
        ping[..ping.len() / 2].to_vec(),                       // truncated, and not sealed
        seal_packet(&ping, &other_key, [1; 12], b"").unwrap(), // the wrong key
        vec![200, 1, 2, 3],                                    // an unknown type
        vec![0x5a; 65_000],                                    // oversized noise
    ];
    for g in &garbage {
        udp.send_to(g, a.addr()).unwrap();
    }
    for g in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[10, 0, 0, 0, 20, 1, 2][..]] {
        let mut tcp = TcpStream::connect(a.addr()).unwrap();
        tcp.write_all(g).unwrap();
    }
    assert!(
        eventually(5, || a.rejected().values().sum::<u64>() >= 6),
        "{:?}",
        a.rejected()
    );
    // Still members of each other after all that.
    std::thread::sleep(Duration::from_secs(3));
    assert!(sees(&a, "b") && sees(&b, "a"));
}
