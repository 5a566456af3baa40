#![allow(clippy::unwrap_used)]
//! The wire format against bytes Go produced.
//!
//! Every `GO_*` constant below was printed by Go memberlist 0.2.2 with go-msgpack 0.5.5 (the
//! versions Debian builds Serf 0.9.4 with), Go 1.19, from a test file added to memberlist's
//! own package so it could call the unexported `encode`, `makeCompoundMessage`,
//! `compressPayload` and `sendLocalState`'s encoder on the structs of `net.go`. The
//! encryption fixtures seal with Go's `crypto/aes` + `cipher.NewGCM` exactly as
//! `encryptPayload` does, but with a fixed nonce instead of `crypto/rand`, and were checked
//! to open with memberlist's `decryptPayload`.
//!
//! What they settle: map keys are sorted by field name (not declaration order); nil `[]byte`
//! is 0xc0; strings and bytes are fixstr/str16 (no str8, no bin); integers take the smallest
//! width (`SeqNo` 42 is one byte, 70000 is 0xce + 4); `Vsn` is a 6-byte string; omitempty
//! `Source*` fields vanish when zero.

use std::net::{IpAddr, Ipv4Addr};

use data_encoding::HEXLOWER;

use super::*;

const GO_PING: &str = "0082a44e6f6465a27331a55365714e6f2a";
const GO_PING_SRC: &str = "0085a44e6f6465a27331a55365714e6fcd012caa536f7572636541646472a47f000001\
aa536f757263654e6f6465a573686f616caa536f75726365506f7274cd1f0b";
const GO_INDIRECT: &str = "0188a44e61636bc3a44e6f6465a27331a4506f7274cd1f0aa55365714e6f07aa536f757\
2636541646472a47f000001aa536f757263654e6f6465a573686f616caa536f75726365506f7274cd1f0ba654617267\
6574a47f000001";
const GO_ACK: &str = "0282a75061796c6f6164c0a55365714e6f2a";
const GO_ACK_PAYLOAD: &str = "0282a75061796c6f6164a3010203a55365714e6fce00011170";
const GO_ACK_LONG: &str = "0282a75061796c6f6164da0028787878787878787878787878787878787878787878787\
87878787878787878787878787878787878a55365714e6f01";
const GO_SUSPECT: &str = "0383a446726f6da573686f616cab496e6361726e6174696f6e03a44e6f6465a27331";
const GO_ALIVE: &str = "0486a441646472a47f000001ab496e6361726e6174696f6e01a44d657461c0a44e6f6465a7\
73686f616c2d31a4506f7274cd1f0aa356736ea6010502020505";
const GO_ALIVE_META: &str = "0486a441646472a47f000001ab496e6361726e6174696f6eccc8a44d657461a2ff80a4\
4e6f6465a773686f616c2d31a4506f7274cd1f0aa356736ea6010502020505";
const GO_DEAD: &str = "0583a446726f6da27331ab496e6361726e6174696f6ece00010000a44e6f6465a27331";
const GO_NACK: &str = "0b81a55365714e6f09";
const GO_ERR: &str = "0d81a54572726f72a4626f6f6d";
/// `makeCompoundMessage([ping, ack])`.
const GO_COMPOUND: &str = "0702001100120082a44e6f6465a27331a55365714e6f2a0282a75061796c6f6164c0a55\
365714e6f2a";
/// What `sendLocalState` writes for one alive node and 3 bytes of user state, before
/// compression and encryption.
const GO_PUSH_PULL: &str = "0683a44a6f696ec3a54e6f64657301ac5573657253746174654c656e0387a4416464\
72a47f000001ab496e6361726e6174696f6e01a44d657461c0a44e616d65a773686f616c2d31a4506f7274cd1f0aa55\
37461746500a356736ea6010502020505090807";
/// What `sendUserMsg` writes for the user message `aa bb`.
const GO_USER_STREAM: &str = "0881aa557365724d73674c656e02aabb";
/// `compressPayload(GO_PING)`.
const GO_COMPRESSED_PING: &str = "0982a4416c676f00a3427566b500010822e5e40d9932a2e6c42835a54c9c822a0\
202";
/// `compressPayload("TOBEORNOTTOBEORTOBEORNOT#TOBEORNOTTOBEORTOBEORNOT")`.
const GO_COMPRESSED_TOBE: &str = "0982a4416c676f00a3427566da002000a93c1152e48914274fa80824687061c1\
83094738348850e1c0871321520908";
/// `compressPayload(big_input())`: length and CRC32 of Go's 23,335 bytes (the input fills the
/// LZW table many times over, so this pins the table-full clear codes too).
const GO_BIG_COMPRESSED: (usize, u32) = (23_335, 0x35e9_4d03);
/// `[12][crc32]` + GO_PING, as `rawSendMsgPacket` builds it for a protocol-5 peer.
const GO_CRC_PING: &str = "0c841c83440082a44e6f6465a27331a55365714e6f2a";
/// GO_PING sealed with key "0123456789abcdef" and nonce 01..0c.
const GO_ENC_V1: &str = "010102030405060708090a0b0cc01282814f6db34ce2f8122e9cebb06a9ceae5668dec6\
2625aab9c4a61d8c9d23b";
const GO_ENC_V0: &str = "000102030405060708090a0b0cc01282814f6db34ce2f8122e9cebb06a9ccd7da9b3799\
bff91cff5e2a10746cc5d2a93fc81afb8da7d79732716ea5f84";
/// The same with the label "lab" as associated data.
const GO_ENC_V1_LABEL: &str = "010102030405060708090a0b0cc01282814f6db34ce2f8122e9cebb06a9c4525a42\
febad6510cc0dc84baf32a11b";
/// With the 32- and 24-byte keys "0123456789abcdef0123456789abcdef" and "…01234567".
const GO_ENC_V1_K32: &str = "010102030405060708090a0b0c0e6ab5604f98981570a09f9ee67bbf08ae21ba503b6\
1a3fc7426214268bdbaaf97";
const GO_ENC_V1_K24: &str = "010102030405060708090a0b0cee9ffef80ad293257753fea2840b883d708688f0d72\
143badf4f69ac0b967d7f30";

const NONCE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const VSN: Versions = Versions {
    protocol_min: 1,
    protocol_max: 5,
    protocol_cur: 2,
    delegate_min: 2,
    delegate_max: 5,
    delegate_cur: 5,
};

fn hex(s: &str) -> Vec<u8> {
    HEXLOWER.decode(s.as_bytes()).unwrap()
}

fn key16() -> Key {
    Key::new(b"0123456789abcdef").unwrap()
}

/// The input of `GO_BIG_COMPRESSED`: xorshift32 over six letters, as the Go side made it.
fn big_input() -> Vec<u8> {
    let mut x: u32 = 2_463_534_242;
    (0..60_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b"abcdef"[(x % 6) as usize]
        })
        .collect()
}

fn ping() -> Message {
    Message::Ping(Ping {
        seq_no: 42,
        node: "s1".into(),
        ..Ping::default()
    })
}

fn ack() -> Message {
    Message::Ack(Ack {
        seq_no: 42,
        payload: Vec::new(),
    })
}

fn alive() -> Alive {
    Alive {
        incarnation: 1,
        node: "shoal-1".into(),
        addr: LO,
        port: 7946,
        meta: Vec::new(),
        vsn: Some(VSN),
    }
}

fn push_pull() -> PushPull {
    PushPull {
        join: true,
        nodes: vec![PushNodeState {
            name: "shoal-1".into(),
            addr: LO,
            port: 7946,
            meta: Vec::new(),
            incarnation: 1,
            state: NodeState::Alive,
            vsn: Some(VSN),
        }],
        user_state: vec![9, 8, 7],
    }
}

/// Every message type next to the bytes Go wrote for it.
fn go_messages() -> Vec<(&'static str, Message)> {
    vec![
        (GO_PING, ping()),
        (
            GO_PING_SRC,
            Message::Ping(Ping {
                seq_no: 300,
                node: "s1".into(),
                source_addr: Some(LO),
                source_port: 7947,
                source_node: "shoal".into(),
            }),
        ),
        (
            GO_INDIRECT,
            Message::IndirectPing(IndirectPing {
                seq_no: 7,
                target: LO,
                port: 7946,
                node: "s1".into(),
                nack: true,
                source_addr: Some(LO),
                source_port: 7947,
                source_node: "shoal".into(),
            }),
        ),
        (GO_ACK, ack()),
        (
            GO_ACK_PAYLOAD,
            Message::Ack(Ack {
                seq_no: 70_000,
                payload: vec![1, 2, 3],
            }),
        ),
        (
            GO_ACK_LONG,
            Message::Ack(Ack {
                seq_no: 1,
                payload: vec![b'x'; 40],
            }),
        ),
        (
            GO_SUSPECT,
            Message::Suspect(Suspect {
                incarnation: 3,
                node: "s1".into(),
                from: "shoal".into(),
            }),
        ),
        (GO_ALIVE, Message::Alive(alive())),
        (
            GO_ALIVE_META,
            Message::Alive(Alive {
                incarnation: 200,
                meta: vec![0xff, 0x80],
                ..alive()
            }),
        ),
        (
            GO_DEAD,
            Message::Dead(Dead {
                incarnation: 65_536,
                node: "s1".into(),
                from: "s1".into(),
            }),
        ),
        (GO_NACK, Message::Nack(Nack { seq_no: 9 })),
        (
            GO_ERR,
            Message::Err(ErrResp {
                error: "boom".into(),
            }),
        ),
    ]
}

#[test]
fn every_message_encodes_to_gos_bytes_and_decodes_back() {
    for (go, msg) in go_messages() {
        assert_eq!(HEXLOWER.encode(&encode(&msg)), go, "encoding {msg:?}");
        assert_eq!(decode(&hex(go)).unwrap(), msg, "decoding {go}");
    }
}

#[test]
fn user_messages_are_raw_bytes() {
    let msg = Message::User(vec![1, 2, 3]);
    assert_eq!(encode(&msg), [8, 1, 2, 3]);
    assert_eq!(decode(&[8, 1, 2, 3]).unwrap(), msg);
    assert_eq!(decode(&[8]).unwrap(), Message::User(Vec::new()));
}

#[test]
fn a_compound_of_two_matches_go_and_decodes_to_both() {
    let compound = encode_compound(&[encode(&ping()), encode(&ack())]).unwrap();
    assert_eq!(HEXLOWER.encode(&compound), GO_COMPOUND);
    let packet = decode_packet(&compound, None).unwrap();
    assert_eq!(packet.messages, [ping(), ack()]);
    assert!(packet.errors.is_empty());
}

#[test]
fn a_truncated_compound_keeps_its_whole_parts_and_counts_the_rest() {
    let mut compound = hex(GO_COMPOUND);
    compound.truncate(compound.len() - 3);
    let packet = decode_packet(&compound, None).unwrap();
    assert_eq!(packet.messages, [ping()]);
    assert_eq!(packet.errors, [WireError::CompoundTruncated(1)]);
    // A bad part is dropped alone, as memberlist does.
    let garbage = encode_compound(&[vec![0x63], encode(&ack())]).unwrap();
    let packet = decode_packet(&garbage, None).unwrap();
    assert_eq!(packet.messages, [ack()]);
    assert_eq!(packet.errors, [WireError::UnknownType(0x63)]);
    // Missing length table: the packet as a whole is refused.
    assert_eq!(
        decode_packet(&[7, 3, 0, 1], None),
        Err(WireError::Truncated("compound length table"))
    );
}

#[test]
fn compound_and_compression_nest_only_once() {
    let inner = encode_compound(&[encode(&ping())]).unwrap();
    let outer = encode_compound(&[inner.clone(), encode(&ack())]).unwrap();
    let packet = decode_packet(&outer, None).unwrap();
    assert_eq!(packet.messages, [ack()]);
    assert_eq!(packet.errors, [WireError::Nested("compound")]);

    assert_eq!(
        decode_packet(&compress(&compress(&encode(&ping()))), None),
        Err(WireError::Nested("compression"))
    );
    // memberlist's own shape: a compressed compound.
    let packet = decode_packet(&compress(&hex(GO_COMPOUND)), None).unwrap();
    assert_eq!(packet.messages, [ping(), ack()]);
}

#[test]
fn compression_is_byte_identical_to_gos_and_inflates_gos_output() {
    for (go, plain) in [
        (GO_COMPRESSED_PING, hex(GO_PING)),
        (
            GO_COMPRESSED_TOBE,
            b"TOBEORNOTTOBEORTOBEORNOT#TOBEORNOTTOBEORTOBEORNOT".to_vec(),
        ),
    ] {
        assert_eq!(HEXLOWER.encode(&compress(&plain)), go);
        assert_eq!(frame::decompress(&hex(go)[1..], MAX_STREAM).unwrap(), plain);
    }
    let packet = decode_packet(&hex(GO_COMPRESSED_PING), None).unwrap();
    assert_eq!(packet.messages, [ping()]);

    let big = big_input();
    let ours = compress(&big);
    assert_eq!((ours.len(), crc32fast::hash(&ours)), GO_BIG_COMPRESSED);
    assert_eq!(frame::decompress(&ours[1..], MAX_STREAM).unwrap(), big);
}

#[test]
fn lzw_edge_cases() {
    // Go writes [clear, eof] for no input.
    assert_eq!(lzw::decompress(&lzw::compress(b""), 10).unwrap(), b"");
    // Data with no end code is an error, as io.ErrUnexpectedEOF is for memberlist.
    let mut cut = lzw::compress(b"hello hello hello");
    cut.truncate(cut.len() - 2);
    assert_eq!(
        lzw::decompress(&cut, 100),
        Err(WireError::Lzw("data ends before the end code"))
    );
    // A code past the table: clear (256) then 300, LSB first in 9 bits.
    let bits: u32 = 256 | (300 << 9);
    let bad = bits.to_le_bytes();
    assert_eq!(
        lzw::decompress(&bad[..3], 100),
        Err(WireError::Lzw("code beyond the table"))
    );
    // No leading clear code (Go before 1.17 wrote none): literal 'a' (97), then eof.
    let bits: u32 = 97 | (257 << 9);
    assert_eq!(
        lzw::decompress(&bits.to_le_bytes()[..3], 100).unwrap(),
        b"a"
    );
}

#[test]
fn decompression_bombs_stop_at_the_cap() {
    let bomb = compress(&vec![0u8; 4 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    assert!(matches!(
        decode_packet(&bomb, None),
        Err(WireError::TooLarge {
            what: "decompressed payload",
            ..
        })
    ));
    // 100 small bombs in one compound share one budget: the first inflates (to zeros, which
    // are no message), the other 99 find the budget spent.
    let small = compress(&vec![0u8; 60 * 1024]);
    let compound = encode_compound(&vec![small; 100]).unwrap();
    assert!(compound.len() <= MAX_PACKET, "{} bytes", compound.len());
    let packet = decode_packet(&compound, None).unwrap();
    assert!(packet.messages.is_empty());
    let kinds: Vec<_> = packet.errors.iter().map(WireError::kind).collect();
    assert_eq!(kinds[0], "malformed");
    assert_eq!(kinds[1..], ["too_large"; 99]);
}

#[test]
fn checksums_are_checked() {
    let crc = add_crc(&hex(GO_PING));
    assert_eq!(HEXLOWER.encode(&crc), GO_CRC_PING);
    let packet = decode_packet(&crc, None).unwrap();
    assert!(packet.checksummed);
    assert_eq!(packet.messages, [ping()]);

    let mut bad = crc.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(
        decode_packet(&bad, None),
        Err(WireError::Checksum { .. })
    ));
    assert_eq!(
        decode_packet(&[12, 0, 0], None),
        Err(WireError::Truncated("checksum header"))
    );
    // Only outermost: a checksum inside a compound is refused (memberlist ignores it).
    let packet = decode_packet(&encode_compound(&[crc]).unwrap(), None).unwrap();
    assert_eq!(packet.errors[0].kind(), "unexpected_type");
}

#[test]
fn encryption_matches_go_for_every_key_size_and_version() {
    let plain = hex(GO_PING);
    let k32 = Key::new(b"0123456789abcdef0123456789abcdef").unwrap();
    let k24 = Key::new(b"0123456789abcdef01234567").unwrap();
    let cases = [
        (GO_ENC_V1, &key16(), &b""[..]),
        (GO_ENC_V1_LABEL, &key16(), &b"lab"[..]),
        (GO_ENC_V1_K32, &k32, &b""[..]),
        (GO_ENC_V1_K24, &k24, &b""[..]),
    ];
    for (go, key, aad) in cases {
        assert_eq!(HEXLOWER.encode(&encrypt(key, NONCE, &plain, aad)), go);
        let keys = [k32.clone(), k24.clone(), key16()];
        assert_eq!(decrypt(&keys, &hex(go), aad).unwrap(), plain);
    }
    assert_eq!(
        HEXLOWER.encode(&encrypt_legacy(&key16(), NONCE, &plain, b"")),
        GO_ENC_V0
    );
    assert_eq!(decrypt(&[key16()], &hex(GO_ENC_V0), b"").unwrap(), plain);

    // Wrong label, wrong key, altered byte: nothing opens.
    assert_eq!(
        decrypt(&[key16()], &hex(GO_ENC_V1), b"x"),
        Err(WireError::Decrypt)
    );
    assert_eq!(
        decrypt(&[k32], &hex(GO_ENC_V1), b""),
        Err(WireError::Decrypt)
    );
    let mut altered = hex(GO_ENC_V1);
    altered[20] ^= 0x40;
    assert_eq!(decrypt(&[key16()], &altered, b""), Err(WireError::Decrypt));
    // Versions and lengths.
    assert_eq!(
        decrypt(&[key16()], &[2; 40], b""),
        Err(WireError::EncryptionVersion(2))
    );
    assert_eq!(
        decrypt(&[key16()], &[1; 28], b""),
        Err(WireError::Truncated("encrypted message"))
    );
    assert_eq!(
        decrypt(&[key16()], &[0; 44], b""),
        Err(WireError::Truncated("encrypted message"))
    );
    assert_eq!(decrypt(&[key16()], &[], b""), Err(WireError::Empty));
}

#[test]
fn legacy_padding_is_checked() {
    // A version-0 message whose "padding" byte says 17: sealed by hand without padding.
    let mut body = vec![0u8; 15];
    body.push(17);
    let v1 = encrypt(&key16(), NONCE, &body, b"");
    let mut v0 = v1.clone();
    v0[0] = 0;
    assert_eq!(decrypt(&[key16()], &v0, b""), Err(WireError::Padding));
}

#[test]
fn encrypted_labelled_packets_round_trip() {
    let ring = Keyring::new(Key::new(&[7; 32]).unwrap()).with(key16());
    let msg = add_crc(&encode_compound(&[encode(&ping()), encode(&ack())]).unwrap());
    // Sent with the second key: still opens.
    let sealed = seal_packet(&msg, &key16(), NONCE, b"cluster-a").unwrap();
    assert_eq!(&sealed[..11], b"\xf4\x09cluster-a");
    let packet = decode_packet(&sealed, Some(&ring)).unwrap();
    assert_eq!(packet.label, b"cluster-a");
    assert!(packet.encrypted && packet.checksummed);
    assert_eq!(packet.messages, [ping(), ack()]);
    // The label is authenticated: moving the packet to another label fails.
    let mut relabelled = sealed.clone();
    relabelled[2] = b'C';
    assert_eq!(
        decode_packet(&relabelled, Some(&ring)),
        Err(WireError::Decrypt)
    );
    // Plaintext to an encrypting receiver fails to open.
    assert!(decode_packet(&encode(&ping()), Some(&ring)).is_err());
    // Label headers: empty is refused, short is truncated.
    assert_eq!(
        decode_packet(&[244, 0, 0], None),
        Err(WireError::Label("empty label header"))
    );
    assert_eq!(
        decode_packet(&[244, 5, b'a'], None),
        Err(WireError::Truncated("label header"))
    );
    assert!(add_label(&[b'x'; 256], b"").is_err());
    assert_eq!(add_label(b"", b"abc").unwrap(), b"abc");
}

#[test]
fn push_pull_matches_go_and_decodes_incrementally() {
    let go = hex(GO_PUSH_PULL);
    let msg = StreamMessage::PushPull(push_pull());
    assert_eq!(encode_stream(&msg), go);
    for cut in 0..go.len() {
        assert_eq!(
            decode_stream(&go[..cut], None),
            Err(WireError::Incomplete),
            "prefix of {cut} bytes"
        );
    }
    let mut more = go.clone();
    more.extend_from_slice(b"next");
    let (frame, used) = decode_stream(&more, None).unwrap();
    assert_eq!(used, go.len());
    assert_eq!(frame.message, msg);
    assert!(!frame.encrypted && !frame.compressed && frame.label.is_empty());
}

#[test]
fn other_stream_messages_round_trip() {
    let go = hex(GO_USER_STREAM);
    let user = StreamMessage::User(vec![0xaa, 0xbb]);
    assert_eq!(encode_stream(&user), go);
    let cases = [
        user,
        StreamMessage::Ping(Ping {
            seq_no: 5,
            node: "s1".into(),
            ..Ping::default()
        }),
        StreamMessage::Ack(Ack {
            seq_no: 5,
            payload: vec![1],
        }),
        StreamMessage::Err(ErrResp {
            error: "nope".into(),
        }),
    ];
    for msg in cases {
        let bytes = encode_stream(&msg);
        assert_eq!(
            decode_stream(&bytes, None).unwrap(),
            (frame(msg.clone()), bytes.len())
        );
        // Compressed, as memberlist sends every stream by default.
        let packed = compress(&bytes);
        let (got, used) = decode_stream(&packed, None).unwrap();
        assert_eq!(
            (got.message, got.compressed, used),
            (msg, true, packed.len())
        );
    }
    // An alive is no stream message.
    assert!(matches!(
        decode_stream(&encode(&Message::Alive(alive())), None),
        Err(WireError::UnexpectedType { got: 4, .. })
    ));
}

fn frame(message: StreamMessage) -> StreamFrame {
    StreamFrame {
        label: Vec::new(),
        encrypted: false,
        compressed: false,
        message,
    }
}

#[test]
fn encrypted_streams_round_trip_and_authenticate_their_header_and_label() {
    let ring = Keyring::new(key16());
    let plain = compress(&hex(GO_PUSH_PULL));
    let sealed = seal_stream(&plain, ring.primary(), NONCE, b"lab").unwrap();
    // Label header, then [10][u32 len] = 1 + 12 + plaintext + 16.
    assert_eq!(&sealed[..5], b"\xf4\x03lab");
    assert_eq!(sealed[5], 10);
    let len = u32::from_be_bytes(sealed[6..10].try_into().unwrap()) as usize;
    assert_eq!(len, 1 + 12 + plain.len() + 16);
    for cut in 0..sealed.len() {
        assert_eq!(
            decode_stream(&sealed[..cut], Some(&ring)),
            Err(WireError::Incomplete)
        );
    }
    let (got, used) = decode_stream(&sealed, Some(&ring)).unwrap();
    assert_eq!(used, sealed.len());
    assert_eq!(got.message, StreamMessage::PushPull(push_pull()));
    assert!(got.encrypted && got.compressed);
    assert_eq!(got.label, b"lab");

    // What memberlist 0.2.2 sends (no label): AAD is exactly the 5-byte header.
    let unlabelled = seal_stream(&plain, ring.primary(), NONCE, b"").unwrap();
    let header = &unlabelled[..5];
    assert_eq!(
        decrypt(ring.keys(), &unlabelled[5..], header).unwrap(),
        plain
    );

    assert_eq!(decode_stream(&sealed, None), Err(WireError::NotConfigured));
    assert_eq!(
        decode_stream(&plain, Some(&ring)),
        Err(WireError::NotEncrypted)
    );
    let other = Keyring::new(Key::new(&[1; 16]).unwrap());
    assert_eq!(
        decode_stream(&sealed, Some(&other)),
        Err(WireError::Decrypt)
    );
}

#[test]
fn stream_limits_are_enforced_before_waiting_for_bytes() {
    // Huge user state, declared up front: refused at once, not awaited.
    let mut huge = vec![6, 0x83, 0xa4];
    huge.extend_from_slice(b"Join");
    huge.push(0xc2);
    huge.extend_from_slice(b"\xa5Nodes\x00\xacUserStateLen\xce\xff\xff\xff\xff");
    assert!(matches!(
        decode_stream(&huge, None),
        Err(WireError::TooLarge {
            what: "push/pull user state",
            ..
        })
    ));
    let mut many = vec![6, 0x81, 0xa5];
    many.extend_from_slice(b"Nodes\xce\x00\x10\x00\x01");
    assert!(matches!(
        decode_stream(&many, None),
        Err(WireError::TooLarge {
            what: "push/pull node count",
            ..
        })
    ));
    let encrypted = [10, 0x7f, 0xff, 0xff, 0xff];
    let ring = Keyring::new(key16());
    assert!(matches!(
        decode_stream(&encrypted, Some(&ring)),
        Err(WireError::TooLarge {
            what: "encrypted stream",
            ..
        })
    ));
    // A 4 GiB string inside a message.
    let long_str = [0, 0x81, 0xdb, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode_stream(&long_str, None),
        Err(WireError::TooLarge { .. })
    ));
    assert!(matches!(
        decode_packet(&vec![8; MAX_PACKET + 1], None),
        Err(WireError::TooLarge { what: "packet", .. })
    ));
}

#[test]
fn decoding_is_as_lenient_as_go_msgpack() {
    // Keys in another order, str8 and bin8 encodings, a wide integer, an unknown field with
    // a nested value, nil for a missing payload.
    let mut body = vec![2, 0x83];
    body.extend_from_slice(b"\xd9\x05SeqNo\xcf\x00\x00\x00\x00\x00\x00\x00\x2a");
    body.extend_from_slice(b"\xa5Extra\x92\x81\xa1k\x01\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00");
    body.extend_from_slice(b"\xa7Payload\xc4\x02\x01\x02");
    assert_eq!(
        decode(&body).unwrap(),
        Message::Ack(Ack {
            seq_no: 42,
            payload: vec![1, 2],
        })
    );
    // Missing fields are zero; an empty map is a ping for seq 0.
    assert_eq!(decode(&[0, 0x80]).unwrap(), Message::Ping(Ping::default()));
    // IPv4-mapped IPv6 is the IPv4 address; other lengths are refused.
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
    let mut alive_bytes = encode(&Message::Alive(alive()));
    let at = alive_bytes
        .windows(5)
        .position(|w| w == b"\xa4\x7f\x00\x00\x01")
        .unwrap();
    alive_bytes.splice(at..at + 5, [&[0xb0][..], &mapped].concat());
    assert_eq!(decode(&alive_bytes).unwrap(), Message::Alive(alive()));
    // Out of range, negative, wrong types, bad UTF-8.
    assert_eq!(
        decode(b"\x0b\x81\xa5SeqNo\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
        Err(WireError::Malformed("integer out of range"))
    );
    assert_eq!(
        decode(b"\x0b\x81\xa5SeqNo\xff"),
        Err(WireError::Malformed("negative integer"))
    );
    assert_eq!(
        decode(b"\x0b\x90"),
        Err(WireError::Malformed("expected a msgpack map"))
    );
    assert_eq!(
        decode(b"\x0d\x81\xa5Error\xa2\xff\xfe"),
        Err(WireError::Utf8("errResp.Error"))
    );
    assert_eq!(
        decode(b"\x04\x81\xa4Addr\xa3\x01\x02\x03"),
        Err(WireError::Address {
            field: "alive.Addr",
            len: 3
        })
    );
    assert_eq!(
        decode(b"\x0b\x81\xa5SeqNo"),
        Err(WireError::Truncated("message body"))
    );
    assert_eq!(decode(&[6, 0x80]).unwrap_err().kind(), "unexpected_type");
    assert_eq!(decode(&[99]), Err(WireError::UnknownType(99)));
    assert_eq!(decode(&[]), Err(WireError::Empty));
}

#[test]
fn versions_need_six_bytes_or_none() {
    let mut no_vsn = alive();
    no_vsn.vsn = None;
    let bytes = encode(&Message::Alive(no_vsn.clone()));
    assert!(bytes.ends_with(b"\xa3Vsn\xc0"));
    assert_eq!(decode(&bytes).unwrap(), Message::Alive(no_vsn));
    let mut short = encode(&Message::Alive(alive()));
    let n = short.len();
    short.splice(n - 7..n, *b"\xa3\x01\x05\x02");
    assert_eq!(
        decode(&short),
        Err(WireError::Malformed("Vsn has fewer than 6 versions"))
    );
}

#[test]
fn keys_parse_like_serf_and_never_print() {
    // `serf keygen` prints 32 bytes of base64; 16 and 24 work too.
    for len in [16, 24, 32] {
        let text = data_encoding::BASE64.encode(&vec![0x5a; len]);
        assert!(Key::from_base64(&text).is_ok(), "{len}");
    }
    let text = data_encoding::BASE64.encode(&[0x5a; 20]);
    assert_eq!(Key::from_base64(&text).unwrap_err(), KeyError::Length(20));
    assert_eq!(
        Key::from_base64("not base64!").unwrap_err(),
        KeyError::Base64
    );
    let shown = format!("{:?}", Keyring::new(key16()));
    assert!(
        shown.contains("AES-128-GCM") && !shown.contains("48"),
        "{shown}"
    );
}

#[test]
fn error_kinds_are_distinct_labels() {
    let all = [
        WireError::Empty,
        WireError::Incomplete,
        WireError::Truncated("x"),
        WireError::TooLarge {
            what: "x",
            len: 1,
            max: 0,
        },
        WireError::UnknownType(99),
        WireError::UnexpectedType {
            got: 6,
            context: "x",
        },
        WireError::Nested("x"),
        WireError::CompoundTruncated(1),
        WireError::Malformed("x"),
        WireError::Utf8("x"),
        WireError::Address { field: "x", len: 3 },
        WireError::Checksum {
            expected: 0,
            actual: 1,
        },
        WireError::CompressionAlgo(1),
        WireError::Lzw("x"),
        WireError::Label("x"),
        WireError::EncryptionVersion(2),
        WireError::Decrypt,
        WireError::Padding,
        WireError::NotConfigured,
        WireError::NotEncrypted,
    ];
    let kinds: std::collections::BTreeSet<_> = all.iter().map(WireError::kind).collect();
    assert_eq!(kinds.len(), all.len());
    assert!(kinds.iter().all(|k| {
        k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }));
}
