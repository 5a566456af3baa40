#![allow(clippy::unwrap_used)]
//! Fuzzing the table layer's decoders (proptest on stable): valid table messages round-trip;
//! arbitrary bytes, and valid messages cut or with bytes flipped, go into the decoder and
//! into a NetDb core as UDP user messages, stream (bulk sync) payloads and push/pull user
//! state: it must refuse and count them, never panic, and store nothing of a network it is
//! not on.

use std::net::SocketAddr;

use proptest::prelude::*;

use control::gossip::netdb::{Config, NetDb, NetMessage, WireEntry};
use control::gossip::tables::Attachment;
use control::gossip::wire::Message;
use dataplane::types::Timestamp;

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9/.-]{0,20}"
}

fn entry() -> impl Strategy<Value = WireEntry> {
    (
        text(),
        text(),
        text(),
        any::<u64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(|(table, key, owner, ltime, value)| WireEntry {
            table,
            key,
            owner,
            ltime,
            value,
        })
}

fn attachment() -> impl Strategy<Value = Attachment> {
    (text(), text(), any::<u64>(), any::<bool>()).prop_map(|(node, network, ltime, attached)| {
        Attachment {
            node,
            network,
            ltime,
            attached,
        }
    })
}

fn message() -> impl Strategy<Value = NetMessage> {
    prop_oneof![
        attachment().prop_map(NetMessage::Attachment),
        (text(), proptest::collection::vec(entry(), 0..6))
            .prop_map(|(network, entries)| NetMessage::Changes { network, entries }),
        (
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec((text(), entry()), 0..6),
            proptest::collection::vec(attachment(), 0..4),
            any::<bool>(),
        )
            .prop_map(|(networks, entries, attachments, reply)| {
                NetMessage::BulkSync {
                    from: "peer".into(),
                    networks,
                    entries,
                    attachments,
                    reply,
                }
            }),
        proptest::collection::vec(attachment(), 0..6).prop_map(NetMessage::Attachments),
    ]
}

/// A core on network `blue` only.
fn core() -> NetDb {
    let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
    let mut db = NetDb::new(Config::default(), "me", addr, 1);
    db.join_network("blue");
    db
}

/// Feeds `bytes` in every way a peer can, and checks that nothing of `red` got in.
fn feed(bytes: &[u8]) {
    let mut db = core();
    let from: SocketAddr = "10.0.0.2:7946".parse().unwrap();
    let now = Timestamp(1_000_000_000);
    db.handle(now, from, Message::User(bytes.to_vec()));
    db.handle_stream(now, bytes);
    db.merge_push_pull(now, Vec::new(), bytes);
    db.tick(Timestamp(2_000_000_000));
    assert!(
        db.tables().visible().all(|(k, _, _)| k.network == "blue"),
        "only blue is stored here"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_messages_round_trip(m in message()) {
        prop_assert_eq!(NetMessage::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = NetMessage::decode(&bytes);
        feed(&bytes);
        // With our prefix, so the decoder gets past it.
        let mut ours = vec![0x5e, 1];
        ours.extend(&bytes);
        let _ = NetMessage::decode(&ours);
        feed(&ours);
    }

    #[test]
    fn damaged_messages_never_panic(
        m in message(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let bytes = m.encode();
        feed(&bytes[..cut.index(bytes.len() + 1)]);
        let mut flipped = bytes.clone();
        for (at, x) in flips {
            let i = at.index(flipped.len());
            flipped[i] ^= x | 1;
        }
        feed(&flipped);
    }
}

#[test]
fn refusals_are_counted_by_reason() {
    let mut db = core();
    let from: SocketAddr = "10.0.0.2:7946".parse().unwrap();
    let now = Timestamp(0);
    let red = NetMessage::Changes {
        network: "red".into(),
        entries: Vec::new(),
    };
    db.handle(now, from, Message::User(red.encode()));
    db.handle(now, from, Message::User(vec![0x5e, 1, 0xff]));
    db.handle(now, from, Message::User(vec![2, 0x80]));
    let kinds: Vec<(&str, u64)> = db.refused().iter().map(|(k, n)| (k.kind(), *n)).collect();
    assert_eq!(
        kinds,
        vec![
            ("malformed table message", 1),
            ("table data of a network not attached here", 1),
            ("foreign user message", 1),
        ]
    );
}
