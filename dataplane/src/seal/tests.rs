//! Tests of the replay window and the key set, with RFC 8439's AEAD vector checked through
//! ring and through RustCrypto's chacha20poly1305, an independent implementation.

use super::keyset::{MAX_KEYS, MAX_SENDERS_PER_EPOCH};
use super::replay::{ReplayWindow, WINDOW_SIZE};
use super::{KeyError, KeySet, NetworkKey, OpenError, SealError};
use crate::types::{Epoch, SenderId, Vni};
use crate::wire::vxlan::{self, Header, SEALED_HEADER_LEN, SealedHeader, TAG_LEN};

// ---------------------------------------------------------------------------------------
// RFC 8439 §2.8.2 through both implementations
// ---------------------------------------------------------------------------------------

const RFC_KEY: [u8; 32] = [
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f,
    0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f,
];
/// 32-bit fixed-common part 07 00 00 00, then IV 40..47.
const RFC_NONCE: [u8; 12] = [7, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
const RFC_AAD: [u8; 12] = [
    0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
];
const RFC_PLAINTEXT: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";
const RFC_CIPHERTEXT: [u8; 114] = [
    0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb, 0x7b, 0x86, 0xaf, 0xbc, 0x53, 0xef, 0x7e, 0xc2,
    0xa4, 0xad, 0xed, 0x51, 0x29, 0x6e, 0x08, 0xfe, 0xa9, 0xe2, 0xb5, 0xa7, 0x36, 0xee, 0x62, 0xd6,
    0x3d, 0xbe, 0xa4, 0x5e, 0x8c, 0xa9, 0x67, 0x12, 0x82, 0xfa, 0xfb, 0x69, 0xda, 0x92, 0x72, 0x8b,
    0x1a, 0x71, 0xde, 0x0a, 0x9e, 0x06, 0x0b, 0x29, 0x05, 0xd6, 0xa5, 0xb6, 0x7e, 0xcd, 0x3b, 0x36,
    0x92, 0xdd, 0xbd, 0x7f, 0x2d, 0x77, 0x8b, 0x8c, 0x98, 0x03, 0xae, 0xe3, 0x28, 0x09, 0x1b, 0x58,
    0xfa, 0xb3, 0x24, 0xe4, 0xfa, 0xd6, 0x75, 0x94, 0x55, 0x85, 0x80, 0x8b, 0x48, 0x31, 0xd7, 0xbc,
    0x3f, 0xf4, 0xde, 0xf0, 0x8e, 0x4b, 0x7a, 0x9d, 0xe5, 0x76, 0xd2, 0x65, 0x86, 0xce, 0xc6, 0x4b,
    0x61, 0x16,
];
const RFC_TAG: [u8; 16] = [
    0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06, 0x91,
];

fn ring_seal(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap());
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        .unwrap();
    tag.as_ref().try_into().unwrap()
}

fn rustcrypto_seal(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
    let cipher = ChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), aad, buf.into())
        .unwrap();
    tag.into()
}

#[test]
fn rfc8439_aead_vector_through_ring() {
    let mut buf = RFC_PLAINTEXT.to_vec();
    let tag = ring_seal(&RFC_KEY, RFC_NONCE, &RFC_AAD, &mut buf);
    assert_eq!(buf, RFC_CIPHERTEXT);
    assert_eq!(tag, RFC_TAG);
}

#[test]
fn rfc8439_aead_vector_through_chacha20poly1305_crate() {
    let mut buf = RFC_PLAINTEXT.to_vec();
    let tag = rustcrypto_seal(&RFC_KEY, RFC_NONCE, &RFC_AAD, &mut buf);
    assert_eq!(buf, RFC_CIPHERTEXT);
    assert_eq!(tag, RFC_TAG);
}

#[test]
fn keyset_output_matches_an_independent_implementation() {
    // Pins the nonce layout (sender BE ‖ counter BE) and the AAD (the 24 header bytes).
    let mut ks = keyset(0x0a0b_0c0d, 0x0102_0304_0506_0708, &[(1, 0x42)]);
    ks.set_tx(Epoch(1)).unwrap();
    let mut f = Frame::new(RFC_PLAINTEXT);
    ks.seal(vni(), &mut f.header, &mut f.payload, &mut f.tag)
        .unwrap();

    let nonce = [0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut expected = RFC_PLAINTEXT.to_vec();
    let tag = rustcrypto_seal(&[0x42; 32], nonce, &f.header, &mut expected);
    assert_eq!(f.payload, expected);
    assert_eq!(f.tag, tag);
}

// ---------------------------------------------------------------------------------------
// Key set
// ---------------------------------------------------------------------------------------

fn vni() -> Vni {
    Vni::new(4097).unwrap()
}

/// A key set for `sender` holding `(epoch, key byte)` keys.
fn keyset(sender: u32, counter_start: u64, keys: &[(u32, u8)]) -> KeySet {
    let mut ks = KeySet::new(SenderId(sender), counter_start);
    for &(epoch, byte) in keys {
        assert_eq!(ks.install(Epoch(epoch), NetworkKey([byte; 32])), None);
    }
    ks
}

/// A sealed frame's three parts, owned.
#[derive(Clone, Debug, PartialEq)]
struct Frame {
    header: [u8; SEALED_HEADER_LEN],
    payload: Vec<u8>,
    tag: [u8; TAG_LEN],
}

impl Frame {
    fn new(plaintext: &[u8]) -> Frame {
        Frame {
            header: [0; SEALED_HEADER_LEN],
            payload: plaintext.to_vec(),
            tag: [0; TAG_LEN],
        }
    }

    fn parsed(&self) -> SealedHeader {
        let mut d = self.header.to_vec();
        d.extend_from_slice(&self.payload);
        d.extend_from_slice(&self.tag);
        match vxlan::parse(&d).unwrap() {
            (Header::Sealed(h), SEALED_HEADER_LEN) => h,
            other => panic!("not sealed: {other:?}"),
        }
    }
}

const INNER: &[u8] = b"\x02\x42\x0a\x00\x00\x03\x02\x42\x0a\x00\x00\x02\x08\x00 an IPv4 packet";

fn seal(ks: &mut KeySet) -> Frame {
    let mut f = Frame::new(INNER);
    ks.seal(vni(), &mut f.header, &mut f.payload, &mut f.tag)
        .unwrap();
    f
}

/// Opens a copy of `f`; on success checks the plaintext.
fn open(ks: &mut KeySet, f: &Frame) -> Result<(), OpenError> {
    let mut f = f.clone();
    let h = f.parsed();
    ks.open(&h, &f.header, &mut f.payload, &f.tag)?;
    assert_eq!(f.payload, INNER);
    Ok(())
}

#[test]
fn seal_then_open() {
    let mut tx = keyset(1, 100, &[(1, 9)]);
    let mut rx = keyset(2, 0, &[(1, 9)]);
    tx.set_tx(Epoch(1)).unwrap();
    let f = seal(&mut tx);
    assert_ne!(f.payload, INNER, "encrypted in place");
    let h = f.parsed();
    assert_eq!(
        h,
        SealedHeader {
            vni: vni(),
            epoch: Epoch(1),
            sender: SenderId(1),
            counter: 100
        }
    );
    assert_eq!(open(&mut rx, &f), Ok(()));
}

#[test]
fn counters_never_repeat() {
    let mut tx = keyset(1, 0, &[(1, 9)]);
    tx.set_tx(Epoch(1)).unwrap();
    let (a, b) = (seal(&mut tx), seal(&mut tx));
    assert_eq!((a.parsed().counter, b.parsed().counter), (0, 1));
    assert_ne!(a.payload, b.payload, "same plaintext, different nonce");
    assert_eq!(tx.next_counter(), 2);
}

#[test]
fn tampering_anywhere_is_bad_tag_and_leaves_the_window_alone() {
    let mut tx = keyset(1, 0, &[(1, 9)]);
    tx.set_tx(Epoch(1)).unwrap();
    let f = seal(&mut tx);
    let mut rx = keyset(2, 0, &[(1, 9)]);
    // A reserved header byte: not part of `SealedHeader`, but authenticated.
    for i in [1, 2, 3, 7] {
        let mut t = f.clone();
        t.header[i] ^= 1;
        assert_eq!(open(&mut rx, &t), Err(OpenError::BadTag), "header byte {i}");
    }
    // Header fields: the parsed header follows the bytes, so the nonce changes too.
    for i in [4, 6, 12, 15, 16, 23] {
        let mut t = f.clone();
        t.header[i] ^= 0x80;
        assert_eq!(open(&mut rx, &t), Err(OpenError::BadTag), "header byte {i}");
    }
    for i in [0, INNER.len() - 1] {
        let mut t = f.clone();
        t.payload[i] ^= 1;
        assert_eq!(
            open(&mut rx, &t),
            Err(OpenError::BadTag),
            "payload byte {i}"
        );
    }
    for i in [0, TAG_LEN - 1] {
        let mut t = f.clone();
        t.tag[i] ^= 1;
        assert_eq!(open(&mut rx, &t), Err(OpenError::BadTag), "tag byte {i}");
    }
    // None of the forgeries marked the window: the genuine frame still opens.
    assert_eq!(open(&mut rx, &f), Ok(()));
}

#[test]
fn header_not_matching_its_bytes_is_bad_tag() {
    let mut tx = keyset(1, 0, &[(1, 9)]);
    tx.set_tx(Epoch(1)).unwrap();
    let mut f = seal(&mut tx);
    let mut rx = keyset(2, 0, &[(1, 9)]);
    let mut h = f.parsed();
    h.counter += 1;
    assert_eq!(
        rx.open(&h, &f.header, &mut f.payload, &f.tag),
        Err(OpenError::BadTag)
    );
}

#[test]
fn replay_is_refused() {
    let mut tx = keyset(1, 0, &[(1, 9)]);
    tx.set_tx(Epoch(1)).unwrap();
    let mut rx = keyset(2, 0, &[(1, 9)]);
    let frames: Vec<Frame> = (0..3).map(|_| seal(&mut tx)).collect();
    assert_eq!(open(&mut rx, &frames[2]), Ok(()));
    assert_eq!(
        open(&mut rx, &frames[0]),
        Ok(()),
        "reordered within the window"
    );
    assert_eq!(open(&mut rx, &frames[2]), Err(OpenError::Replayed));
    assert_eq!(open(&mut rx, &frames[0]), Err(OpenError::Replayed));
    assert_eq!(open(&mut rx, &frames[1]), Ok(()));
}

#[test]
fn windows_are_per_sender() {
    let mut a = keyset(1, 500, &[(1, 9)]);
    let mut b = keyset(2, 500, &[(1, 9)]);
    a.set_tx(Epoch(1)).unwrap();
    b.set_tx(Epoch(1)).unwrap();
    let mut rx = keyset(3, 0, &[(1, 9)]);
    assert_eq!(open(&mut rx, &seal(&mut a)), Ok(()));
    assert_eq!(
        open(&mut rx, &seal(&mut b)),
        Ok(()),
        "same counter, other sender"
    );
}

#[test]
fn unknown_epoch() {
    let mut tx = keyset(1, 0, &[(5, 9)]);
    tx.set_tx(Epoch(5)).unwrap();
    let mut rx = keyset(2, 0, &[(1, 9)]);
    assert_eq!(open(&mut rx, &seal(&mut tx)), Err(OpenError::UnknownEpoch));
}

#[test]
fn sealing_needs_a_tx_key() {
    let mut ks = keyset(1, 0, &[(1, 9)]);
    let mut f = Frame::new(INNER);
    assert_eq!(
        ks.seal(vni(), &mut f.header, &mut f.payload, &mut f.tag),
        Err(SealError::NoTxKey)
    );
    assert_eq!(f.payload, INNER);
    assert_eq!(ks.set_tx(Epoch(2)), Err(KeyError::UnknownEpoch));
}

#[test]
fn counter_exhaustion_is_refused_without_reuse() {
    let mut ks = keyset(1, u64::MAX - 1, &[(1, 9)]);
    ks.set_tx(Epoch(1)).unwrap();
    assert_eq!(seal(&mut ks).parsed().counter, u64::MAX - 1);
    let mut f = Frame::new(INNER);
    assert_eq!(
        ks.seal(vni(), &mut f.header, &mut f.payload, &mut f.tag),
        Err(SealError::CounterExhausted)
    );
    assert_eq!(f.payload, INNER);
}

#[test]
fn rotation_never_drops_a_frame() {
    let mut tx = keyset(1, 0, &[(1, 0x11)]);
    let mut rx = keyset(2, 0, &[(1, 0x11)]);
    tx.set_tx(Epoch(1)).unwrap();
    rx.set_tx(Epoch(1)).unwrap();

    // 1. e2 is installed for receiving everywhere; the sender keeps sealing with e1.
    assert_eq!(rx.install(Epoch(2), NetworkKey([0x22; 32])), None);
    assert_eq!(tx.install(Epoch(2), NetworkKey([0x22; 32])), None);
    let early_e1 = seal(&mut tx);
    assert_eq!(open(&mut rx, &early_e1), Ok(()));
    let in_flight_e1 = seal(&mut tx);

    // 2. The sender switches to e2; frames of both epochs are in flight.
    tx.set_tx(Epoch(2)).unwrap();
    let new_e2 = seal(&mut tx);
    assert_eq!(new_e2.parsed().epoch, Epoch(2));
    assert_eq!(open(&mut rx, &new_e2), Ok(()));
    assert_eq!(open(&mut rx, &in_flight_e1), Ok(()));
    let late_e1 = {
        let mut old = keyset(1, 10, &[(1, 0x11)]);
        old.set_tx(Epoch(1)).unwrap();
        seal(&mut old)
    };

    // 3. e1 is retired (the receiver switches its own TX first); late e1 frames are unknown.
    assert_eq!(rx.retire(Epoch(1)), Err(KeyError::RetireTxKey));
    rx.set_tx(Epoch(2)).unwrap();
    assert_eq!(rx.retire(Epoch(1)), Ok(()));
    assert_eq!(rx.retire(Epoch(1)), Err(KeyError::UnknownEpoch));
    assert_eq!(open(&mut rx, &late_e1), Err(OpenError::UnknownEpoch));
    assert_eq!(open(&mut rx, &seal(&mut tx)), Ok(()));
    assert_eq!(rx.epochs().collect::<Vec<_>>(), [Epoch(2)]);
}

#[test]
fn a_fourth_key_evicts_the_oldest_that_is_not_tx() {
    let mut ks = keyset(1, 0, &[(1, 1), (2, 2), (3, 3)]);
    assert_eq!(MAX_KEYS, 3);
    ks.set_tx(Epoch(1)).unwrap();
    assert_eq!(ks.install(Epoch(4), NetworkKey([4; 32])), Some(Epoch(2)));
    assert_eq!(
        ks.epochs().collect::<Vec<_>>(),
        [Epoch(1), Epoch(3), Epoch(4)]
    );
    ks.set_tx(Epoch(4)).unwrap();
    assert_eq!(ks.install(Epoch(5), NetworkKey([5; 32])), Some(Epoch(1)));
    assert_eq!(
        ks.epochs().collect::<Vec<_>>(),
        [Epoch(3), Epoch(4), Epoch(5)]
    );
    assert_eq!(ks.tx_epoch(), Some(Epoch(4)));
}

#[test]
fn reinstalling_the_same_key_keeps_the_replay_windows_and_a_new_key_replaces_it() {
    let mut tx = keyset(1, 0, &[(1, 9)]);
    tx.set_tx(Epoch(1)).unwrap();
    let f = seal(&mut tx);
    let mut rx = keyset(2, 0, &[(1, 9)]);
    assert_eq!(open(&mut rx, &f), Ok(()));
    assert_eq!(open(&mut rx, &f), Err(OpenError::Replayed));
    // A replayed or resynced update installs the same key again: old frames stay replays.
    assert_eq!(rx.install(Epoch(1), NetworkKey([9; 32])), None);
    assert_eq!(open(&mut rx, &f), Err(OpenError::Replayed), "window kept");
    // Retired and installed again with the same key: still replays.
    rx.install(Epoch(2), NetworkKey([5; 32]));
    rx.retire(Epoch(1)).unwrap();
    assert_eq!(open(&mut rx, &f), Err(OpenError::UnknownEpoch));
    rx.install(Epoch(1), NetworkKey([9; 32]));
    assert_eq!(
        open(&mut rx, &f),
        Err(OpenError::Replayed),
        "window kept across retirement"
    );
    // A different key under the same epoch: fresh windows, and the old frames fail its tag.
    assert_eq!(rx.install(Epoch(1), NetworkKey([8; 32])), None);
    assert_eq!(open(&mut rx, &f), Err(OpenError::BadTag), "key replaced");
}

#[test]
fn senders_per_epoch_are_bounded() {
    let mut rx = keyset(0, 0, &[(1, 9)]);
    let mut last = None;
    for sender in 1..=MAX_SENDERS_PER_EPOCH as u32 + 1 {
        let mut tx = keyset(sender, 0, &[(1, 9)]);
        tx.set_tx(Epoch(1)).unwrap();
        last = Some(open(&mut rx, &seal(&mut tx)));
        if sender as usize <= MAX_SENDERS_PER_EPOCH {
            assert_eq!(last, Some(Ok(())));
        }
    }
    assert_eq!(last, Some(Err(OpenError::TooManySenders)));
}

#[test]
fn debug_does_not_print_key_bytes() {
    let k = NetworkKey([0xab; 32]);
    assert_eq!(format!("{k:?}"), "NetworkKey(..)");
    let ks = keyset(1, 0, &[(1, 0xab)]);
    assert!(!format!("{ks:?}").contains("171"));
}

// ---------------------------------------------------------------------------------------
// Replay window
// ---------------------------------------------------------------------------------------

#[test]
fn window_in_order_from_zero() {
    let mut w = ReplayWindow::new();
    for c in 0..10_000 {
        assert!(w.check(c), "{c}");
        assert!(w.mark(c), "{c}");
        assert!(!w.check(c) && !w.mark(c), "duplicate {c}");
    }
}

#[test]
fn window_reordered_within_window() {
    let mut w = ReplayWindow::new();
    assert!(w.mark(WINDOW_SIZE + 100));
    // Every counter within the window behind the greatest is accepted once, in any order.
    for c in (100..WINDOW_SIZE + 100).rev().step_by(3) {
        assert!(w.mark(c), "{c}");
    }
    for c in (100..WINDOW_SIZE + 100).step_by(3) {
        assert!(!w.mark(c), "dup {c}");
    }
    assert!(w.mark(101));
    assert!(!w.mark(99), "just past the window");
}

#[test]
fn window_edge_is_exact() {
    let mut w = ReplayWindow::new();
    let top = 10 * WINDOW_SIZE + 7;
    assert!(w.mark(top));
    assert!(w.check(top - WINDOW_SIZE));
    assert!(!w.check(top - WINDOW_SIZE - 1));
    assert!(w.mark(top - WINDOW_SIZE));
    assert!(!w.mark(top - WINDOW_SIZE - 1));
}

#[test]
fn window_too_old_and_duplicates() {
    let mut w = ReplayWindow::new();
    assert!(w.mark(5000));
    assert!(!w.check(0) && !w.mark(0));
    assert!(!w.mark(5000));
    assert!(w.mark(4999));
    assert!(!w.mark(4999));
}

#[test]
fn window_huge_jumps_clear_stale_bits() {
    let mut w = ReplayWindow::new();
    for c in 0..2048 {
        assert!(w.mark(c));
    }
    // Jump by exactly the ring size and by more: stale bits must not alias new counters.
    for top in [2048 + 2047, 1 << 20, u64::MAX / 2, u64::MAX] {
        assert!(w.mark(top), "{top}");
        for back in 1..=WINDOW_SIZE.min(top) {
            assert!(w.check(top - back), "{top} - {back}");
        }
        assert!(!w.mark(top));
        assert_eq!(w.greatest(), top);
    }
}

#[test]
fn window_small_jumps_clear_only_what_they_pass() {
    let mut w = ReplayWindow::new();
    for c in (0..20_000).step_by(2) {
        assert!(w.mark(c));
    }
    // The odd ones within the window are still fresh, the even ones are not.
    let top = w.greatest();
    for c in top - WINDOW_SIZE..=top {
        assert_eq!(w.check(c), c % 2 == 1, "{c}");
    }
}

#[test]
fn window_matches_a_model_on_a_pseudo_random_walk() {
    // A deterministic walk (xorshift) against a BTreeSet model of the same rule.
    let mut model = std::collections::BTreeSet::new();
    let mut greatest = 0u64;
    let mut w = ReplayWindow::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut base = 0u64;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = match x % 10 {
            0 => {
                base += x % 5000;
                base
            }
            _ => (base + 64).saturating_sub(x % 2200),
        };
        let fresh = !model.contains(&c) && (c > greatest || greatest - c <= WINDOW_SIZE);
        assert_eq!(w.check(c), fresh, "check {c}");
        assert_eq!(w.mark(c), fresh, "mark {c}");
        if fresh {
            model.insert(c);
            greatest = greatest.max(c);
        }
    }
}
