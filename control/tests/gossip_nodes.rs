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
use control::gossip::netdb::{NetMessage, WireEntry};
use control::gossip::shell::{GossipConfig, GossipNode};
use control::gossip::tables;
use control::gossip::wire::{
    Key, Keyring, Message, NodeState, Ping, StreamMessage, encode, encode_stream, seal_packet,
    seal_stream,
};

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

#[test]
fn bad_table_messages_are_counted_and_the_tables_carry_on() {
    let key = [5u8; 32];
    let a = node("ta", key);
    let b = node("tb", key);
    a.join_network("blue");
    b.join_network("blue");
    assert_eq!(b.join(&[a.addr()]), 1);
    let right_key = Key::new(&key).unwrap();
    let sealed = |m: &Message| seal_packet(&encode(m), &right_key, [3; 12], b"").unwrap();
    let off_network = NetMessage::Changes {
        network: "red".into(),
        entries: vec![WireEntry {
            table: "peers".into(),
            key: "x".into(),
            owner: "mallory".into(),
            ltime: 1,
            value: Some(vec![1]),
        }],
    };
    let udp = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    for payload in [
        vec![0x5e, 1, 0xff, 0xff, 0xff, 0xff], // our prefix, then nothing that decodes
        off_network.encode(),                  // red's data, and a is not on red
        vec![1, 0x80],                         // a Serf user message: not ours, ignored
    ] {
        udp.send_to(&sealed(&Message::User(payload)), a.addr())
            .unwrap();
    }
    let mut tcp = TcpStream::connect(a.addr()).unwrap();
    let stream = seal_stream(
        &encode_stream(&StreamMessage::User(vec![0x5e, 1, 9, 9, 9])),
        &right_key,
        [4; 12],
        b"",
    )
    .unwrap();
    tcp.write_all(&stream).unwrap();
    let counted = |kind: &str, n: u64| a.rejected().get(kind).copied().unwrap_or(0) >= n;
    assert!(
        eventually(5, || counted("malformed table message", 2)
            && counted("table data of a network not attached here", 1)
            && counted("foreign user message", 1)),
        "{:?}",
        a.rejected()
    );
    assert!(
        a.get(&tables::Key {
            network: "red".into(),
            table: "peers".into(),
            key: "x".into()
        })
        .is_none()
    );
    // The tables still work: b's entry reaches a.
    let entry = tables::Key {
        network: "blue".into(),
        table: "peers".into(),
        key: "tb".into(),
    };
    b.write(entry.clone(), Some(b"10.0.0.2".to_vec())).unwrap();
    assert!(eventually(10, || a
        .get(&entry)
        .is_some_and(|(owner, v)| owner == "tb" && v == b"10.0.0.2")));
}
