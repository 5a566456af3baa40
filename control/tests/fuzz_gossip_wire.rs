#![allow(clippy::unwrap_used)]
//! Fuzzing the gossip wire decoders (proptest on stable): arbitrary bytes, and valid packets
//! and streams with bytes flipped, cut or inserted, go into every decoder — packet, stream,
//! single message, decrypt, LZW — which must return, never panic, and stay inside their
//! limits. Valid inputs must round-trip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use control::gossip::wire::{
    Ack, Alive, Dead, ErrResp, IndirectPing, Key, Keyring, MAX_PACKET, MAX_STREAM, Message, Nack,
    NodeState, Ping, PushNodeState, PushPull, StreamMessage, Suspect, Versions, WireError, add_crc,
    compress, decode, decode_packet, decode_stream, decrypt, encode, encode_compound,
    encode_stream, encrypt, encrypt_legacy, lzw, seal_packet, seal_stream,
};

const NONCE: [u8; 12] = [9; 12];

fn keyring() -> Keyring {
    Keyring::new(Key::new(&[0x42; 32]).unwrap()).with(Key::new(&[0x17; 16]).unwrap())
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        // Not IPv4-mapped: those decode as the IPv4 address, by design.
        any::<[u8; 16]>()
            .prop_filter("mapped", |b| Ipv6Addr::from(*b).to_ipv4_mapped().is_none())
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn name() -> impl Strategy<Value = String> {
    // Past 31 bytes a name switches from fixstr to str16.
    "[a-z0-9.-]{0,40}"
}

fn vsn() -> impl Strategy<Value = Option<Versions>> {
    proptest::option::of(any::<[u8; 6]>().prop_map(|v| Versions {
        protocol_min: v[0],
        protocol_max: v[1],
        protocol_cur: v[2],
        delegate_min: v[3],
        delegate_max: v[4],
        delegate_cur: v[5],
    }))
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u32>(),
            name(),
            proptest::option::of(ip()),
            any::<u16>(),
            name()
        )
            .prop_map(|(seq_no, node, source_addr, source_port, source_node)| {
                Message::Ping(Ping {
                    seq_no,
                    node,
                    source_addr,
                    source_port,
                    source_node,
                })
            }),
        (
            any::<u32>(),
            ip(),
            any::<u16>(),
            name(),
            any::<bool>(),
            proptest::option::of(ip())
        )
            .prop_map(|(seq_no, target, port, node, nack, source_addr)| {
                Message::IndirectPing(IndirectPing {
                    seq_no,
                    target,
                    port,
                    node,
                    nack,
                    source_addr,
                    source_port: port / 2,
                    source_node: "relay".into(),
                })
            }),
        (any::<u32>(), bytes(80))
            .prop_map(|(seq_no, payload)| Message::Ack(Ack { seq_no, payload })),
        any::<u32>().prop_map(|seq_no| Message::Nack(Nack { seq_no })),
        (any::<u32>(), name(), name()).prop_map(|(incarnation, node, from)| {
            Message::Suspect(Suspect {
                incarnation,
                node,
                from,
            })
        }),
        (any::<u32>(), name(), ip(), any::<u16>(), bytes(100), vsn()).prop_map(
            |(incarnation, node, addr, port, meta, vsn)| Message::Alive(Alive {
                incarnation,
                node,
                addr,
                port,
                meta,
                vsn,
            })
        ),
        (any::<u32>(), name(), name()).prop_map(|(incarnation, node, from)| {
            Message::Dead(Dead {
                incarnation,
                node,
                from,
            })
        }),
        bytes(100).prop_map(Message::User),
        name().prop_map(|error| Message::Err(ErrResp { error })),
    ]
}

fn node_state() -> impl Strategy<Value = PushNodeState> {
    (
        name(),
        ip(),
        any::<u16>(),
        bytes(40),
        any::<u32>(),
        0..4u8,
        vsn(),
    )
        .prop_map(
            |(name, addr, port, meta, incarnation, state, vsn)| PushNodeState {
                name,
                addr,
                port,
                meta,
                incarnation,
                state: [
                    NodeState::Alive,
                    NodeState::Suspect,
                    NodeState::Dead,
                    NodeState::Left,
                ][usize::from(state)],
                vsn,
            },
        )
}

fn stream_message() -> impl Strategy<Value = StreamMessage> {
    prop_oneof![
        (
            any::<bool>(),
            proptest::collection::vec(node_state(), 0..6),
            bytes(300)
        )
            .prop_map(
                |(join, nodes, user_state)| StreamMessage::PushPull(PushPull {
                    join,
                    nodes,
                    user_state,
                })
            ),
        (any::<u32>(), name()).prop_map(|(seq_no, node)| StreamMessage::Ping(Ping {
            seq_no,
            node,
            ..Ping::default()
        })),
        (any::<u32>(), bytes(40))
            .prop_map(|(seq_no, payload)| StreamMessage::Ack(Ack { seq_no, payload })),
        bytes(300).prop_map(StreamMessage::User),
        name().prop_map(|error| StreamMessage::Err(ErrResp { error })),
    ]
}

/// Flips, cuts and inserts, applied to a valid encoding.
#[derive(Debug, Clone)]
struct Mutation {
    flips: Vec<(usize, u8)>,
    insert: Option<(usize, Vec<u8>)>,
    cut: Option<usize>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        proptest::collection::vec((any::<usize>(), 1..=255u8), 0..5),
        proptest::option::of((any::<usize>(), bytes(8))),
        proptest::option::of(any::<usize>()),
    )
        .prop_map(|(flips, insert, cut)| Mutation { flips, insert, cut })
}

fn mutate(mut buf: Vec<u8>, m: &Mutation) -> Vec<u8> {
    if buf.is_empty() {
        return buf;
    }
    for &(at, xor) in &m.flips {
        let i = at % buf.len();
        buf[i] ^= xor;
    }
    if let Some((at, extra)) = &m.insert {
        let i = at % (buf.len() + 1);
        buf.splice(i..i, extra.iter().copied());
    }
    if let Some(cut) = m.cut {
        buf.truncate(cut % (buf.len() + 1));
    }
    buf
}

/// Feeds `bytes` to every decoder; each must return (an error is fine) within its limits.
fn every_decoder(bytes: &[u8]) {
    let ring = keyring();
    let _ = decode(bytes);
    if let Ok(packet) = decode_packet(bytes, None) {
        assert!(packet.messages.len() + packet.errors.len() <= 255 * 2 + 1);
    }
    let _ = decode_packet(bytes, Some(&ring));
    for keys in [None, Some(&ring)] {
        if let Ok((_, used)) = decode_stream(bytes, keys) {
            assert!(used <= bytes.len());
        }
    }
    let _ = decrypt(ring.keys(), bytes, b"");
    if let Ok(out) = lzw::decompress(bytes, 4096) {
        assert!(out.len() <= 4096);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in bytes(700)) {
        every_decoder(&bytes);
        // The same bytes behind each type byte, so every message decoder sees them.
        for ty in [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 244] {
            let mut typed = vec![ty];
            typed.extend_from_slice(&bytes);
            every_decoder(&typed);
        }
    }

    #[test]
    fn messages_round_trip_through_every_framing(
        msgs in proptest::collection::vec(message(), 1..6),
        label in "[a-z]{0,12}",
    ) {
        for msg in &msgs {
            prop_assert_eq!(&decode(&encode(msg)).unwrap(), msg);
        }
        let compound = encode_compound(&msgs.iter().map(encode).collect::<Vec<_>>()).unwrap();
        for body in [compound.clone(), compress(&compound), add_crc(&compress(&compound))] {
            let packet = decode_packet(&body, None).unwrap();
            prop_assert_eq!(&packet.messages, &msgs);
            let ring = keyring();
            let sealed = seal_packet(&body, &ring.keys()[1], NONCE, label.as_bytes()).unwrap();
            let packet = decode_packet(&sealed, Some(&ring)).unwrap();
            prop_assert_eq!(&packet.messages, &msgs);
            prop_assert_eq!(packet.label, label.as_bytes());
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        msgs in proptest::collection::vec(message(), 1..5),
        framing in 0..4u8,
        m in mutation(),
    ) {
        let compound = encode_compound(&msgs.iter().map(encode).collect::<Vec<_>>()).unwrap();
        let body = match framing {
            0 => compound,
            1 => compress(&compound),
            2 => add_crc(&compound),
            _ => seal_packet(&add_crc(&compress(&compound)), keyring().primary(), NONCE, b"l")
                .unwrap(),
        };
        every_decoder(&mutate(body, &m));
    }

    #[test]
    fn streams_round_trip_at_every_cut(msg in stream_message(), framing in 0..4u8) {
        let ring = keyring();
        let plain = encode_stream(&msg);
        let (bytes, keys) = match framing {
            0 => (plain, None),
            1 => (compress(&plain), None),
            2 => (seal_stream(&plain, ring.primary(), NONCE, b"").unwrap(), Some(&ring)),
            _ => (seal_stream(&compress(&plain), ring.primary(), NONCE, b"lab").unwrap(),
                  Some(&ring)),
        };
        let (frame, used) = decode_stream(&bytes, keys).unwrap();
        prop_assert_eq!(frame.message, msg);
        prop_assert_eq!(used, bytes.len());
        // Every proper prefix asks for more (the shell's incremental read).
        for cut in (0..bytes.len()).step_by(7) {
            prop_assert_eq!(decode_stream(&bytes[..cut], keys), Err(WireError::Incomplete));
        }
    }

    #[test]
    fn mutated_streams_never_panic(msg in stream_message(), framing in 0..3u8, m in mutation()) {
        let plain = encode_stream(&msg);
        let bytes = match framing {
            0 => plain,
            1 => compress(&plain),
            _ => seal_stream(&plain, keyring().primary(), NONCE, b"").unwrap(),
        };
        every_decoder(&mutate(bytes, &m));
    }

    #[test]
    fn ciphertexts_open_only_intact(
        plain in bytes(200),
        aad in bytes(20),
        legacy: bool,
        m in mutation(),
    ) {
        let ring = keyring();
        let key = &ring.keys()[1];
        let sealed = if legacy {
            encrypt_legacy(key, NONCE, &plain, &aad)
        } else {
            encrypt(key, NONCE, &plain, &aad)
        };
        prop_assert_eq!(decrypt(ring.keys(), &sealed, &aad).unwrap(), plain);
        // Any change to nonce, ciphertext or tag fails. The version byte alone is not
        // authenticated in memberlist's format: turned from 1 to 0 it may open and lose
        // "padding"; that is the only way a changed message may still open.
        let mutated = mutate(sealed.clone(), &m);
        if mutated != sealed && decrypt(ring.keys(), &mutated, &aad).is_ok() {
            prop_assert_eq!(&mutated[1..], &sealed[1..]);
        }
    }

    #[test]
    fn lzw_round_trips_and_bounds_its_output(
        input in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..6000),
        cap in 0..8000usize,
        m in mutation(),
    ) {
        let packed = lzw::compress(&input);
        prop_assert_eq!(lzw::decompress(&packed, input.len()).unwrap(), input.clone());
        match lzw::decompress(&packed, cap) {
            Ok(out) => prop_assert!(out.len() <= cap && out == input),
            Err(e) => prop_assert!(cap < input.len() && e.kind() == "too_large"),
        }
        if let Ok(out) = lzw::decompress(&mutate(packed, &m), MAX_STREAM) {
            prop_assert!(out.len() <= MAX_STREAM);
        }
    }
}

#[test]
fn oversized_inputs_are_refused_not_buffered() {
    assert!(decode_packet(&vec![0; MAX_PACKET + 1], None).is_err());
    // A plaintext stream that claims more than the limit is refused at its header.
    let mut pp = vec![6, 0x81, 0xac];
    pp.extend_from_slice(b"UserStateLen\xce\x7f\xff\xff\xff");
    assert_eq!(decode_stream(&pp, None).unwrap_err().kind(), "too_large");
}
