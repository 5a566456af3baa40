//! Property-based fuzzing of everything that reads untrusted bytes: the VXLAN parser, the
//! in-place IPv4 rewrites, MSS clamping and `KeySet::open`. Nothing may panic; parse → emit →
//! parse round-trips; failed rewrites leave the packet unchanged; forged frames never open.
//!
//! Bounded: a few thousand cases per property, well under 20 s in a debug build.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dataplane::seal::{KeySet, NetworkKey, OpenError};
use dataplane::types::{Epoch, SenderId, Vni};
use dataplane::wire::checksum::{
    clamp_mss, rewrite_ipv4_dst, rewrite_ipv4_src, rewrite_l4_dst_port, rewrite_l4_src_port,
};
use dataplane::wire::vxlan::{
    self, FLAG_I, FLAG_SEALED, Header, Packet, SEALED_HEADER_LEN, SealedHeader, TAG_LEN,
    VXLAN_HEADER_LEN, emit_plain, emit_sealed, split_sealed,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const CASES: u32 = 2000;

/// Datagrams that are arbitrary, or arbitrary behind a plausible flags byte, so that both the
/// rejections and the accepted paths are exercised.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(any::<u8>(), 0..96),
        prop_oneof![
            Just(None),
            Just(Some(FLAG_I)),
            Just(Some(FLAG_I | FLAG_SEALED))
        ],
    )
        .prop_map(|(mut d, flags)| {
            if let (Some(f), Some(first)) = (flags, d.first_mut()) {
                *first = f;
            }
            d
        })
}

/// Byte strings that look like IPv4 often enough to reach the L4 code: version 4, IHL mostly
/// 5, a total length that fits or nearly fits, TCP/UDP/ICMP/other, fragment or not, and often
/// a TCP SYN whose first option is an MSS.
fn ipv4ish() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(any::<u8>(), 0..120),
        prop_oneof![3 => Just(5u8), 1 => 0u8..=15],
        prop_oneof![Just(6u8), Just(17u8), Just(1u8), any::<u8>()],
        any::<bool>(),
        0usize..4,
        0u8..4,
    )
        .prop_map(|(mut p, ihl, proto, fragment, slack, shape)| {
            if shape == 0 {
                return p; // Raw bytes.
            }
            if let Some(b) = p.get_mut(0) {
                *b = 0x40 | ihl;
            }
            let total = (p.len() + slack).saturating_sub(2) as u16;
            if let Some(b) = p.get_mut(2..4) {
                b.copy_from_slice(&total.to_be_bytes());
            }
            let frag: u16 = if fragment && shape < 2 {
                0x2000 | 0x55
            } else {
                0x4000
            };
            if let Some(b) = p.get_mut(6..8) {
                b.copy_from_slice(&frag.to_be_bytes());
            }
            if let Some(b) = p.get_mut(9) {
                *b = if shape >= 2 { 6 } else { proto };
            }
            if shape >= 2 {
                // TCP SYN, data offset 6 or 7 words, MSS option first.
                if let Some(b) = p.get_mut(20 + 12) {
                    *b = if shape == 2 { 0x60 } else { 0x70 };
                }
                if let Some(b) = p.get_mut(20 + 13) {
                    *b |= 0x02;
                }
                if let Some(b) = p.get_mut(40..42) {
                    b.copy_from_slice(&[2, 4]);
                }
            }
            p
        })
}

fn vni(raw: u32) -> Vni {
    Vni::new(raw & Vni::MAX).expect("masked to 24 bits")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_and_round_trips(d in datagram()) {
        let Ok((header, len)) = vxlan::parse(&d) else {
            prop_assert!(Packet::new_checked(&d[..]).is_err());
            return Ok(());
        };
        let p = Packet::new_checked(&d[..]).unwrap();
        prop_assert_eq!(p.header(), header);
        prop_assert_eq!(p.header_len(), len);
        let mut again = d.clone();
        match header {
            Header::Plain { vni } => {
                prop_assert_eq!(len, VXLAN_HEADER_LEN);
                prop_assert!(d.len() >= VXLAN_HEADER_LEN + 14);
                prop_assert_eq!(p.payload(), &d[len..]);
                let mut h = [0u8; VXLAN_HEADER_LEN];
                emit_plain(vni, &mut h);
                again[..VXLAN_HEADER_LEN].copy_from_slice(&h);
            }
            Header::Sealed(sh) => {
                prop_assert_eq!(len, SEALED_HEADER_LEN);
                prop_assert_eq!(p.tag().map(|t| &t[..]), Some(&d[d.len() - TAG_LEN..]));
                prop_assert_eq!(p.payload().len(), d.len() - SEALED_HEADER_LEN - TAG_LEN);
                let mut h = [0u8; SEALED_HEADER_LEN];
                emit_sealed(&sh, &mut h);
                again[..SEALED_HEADER_LEN].copy_from_slice(&h);
            }
        }
        prop_assert_eq!(vxlan::parse(&again), Ok((header, len)));
    }

    #[test]
    fn emit_parse_round_trips(
        raw: u32, epoch: u32, sender: u32, counter: u64, sealed: bool,
        body in vec(any::<u8>(), 40..80),
    ) {
        let mut d = body;
        let header = if sealed {
            let h = SealedHeader { vni: vni(raw), epoch: Epoch(epoch), sender: SenderId(sender), counter };
            let (hb, _, _) = split_sealed(&mut d).unwrap();
            emit_sealed(&h, hb);
            Header::Sealed(h)
        } else {
            let mut hb = [0u8; VXLAN_HEADER_LEN];
            emit_plain(vni(raw), &mut hb);
            d[..VXLAN_HEADER_LEN].copy_from_slice(&hb);
            Header::Plain { vni: vni(raw) }
        };
        let len = if sealed { SEALED_HEADER_LEN } else { VXLAN_HEADER_LEN };
        prop_assert_eq!(vxlan::parse(&d), Ok((header, len)));
    }

    #[test]
    fn rewrites_never_panic_and_fail_cleanly(
        p in ipv4ish(), addr: [u8; 4], port: u16, which in 0u8..4, max_mss: u16,
    ) {
        let mut q = p.clone();
        let result = match which {
            0 => rewrite_ipv4_src(&mut q, Ipv4Addr::from(addr)),
            1 => rewrite_ipv4_dst(&mut q, Ipv4Addr::from(addr)),
            2 => rewrite_l4_src_port(&mut q, port),
            _ => rewrite_l4_dst_port(&mut q, port),
        };
        match (result, which) {
            (Err(_), _) => prop_assert_eq!(&q, &p, "a refused rewrite changed the packet"),
            (Ok(()), 0) => prop_assert_eq!(&q[12..16], &addr[..]),
            (Ok(()), 1) => prop_assert_eq!(&q[16..20], &addr[..]),
            (Ok(()), _) => {}
        }
        let mut r = p.clone();
        if !clamp_mss(&mut r, max_mss) {
            prop_assert_eq!(&r, &p, "clamp_mss changed a packet but said it did not");
        }
    }
}

fn receiver() -> KeySet {
    let mut ks = KeySet::new(SenderId(2), 0);
    ks.install(Epoch(1), NetworkKey([0x5a; 32]));
    ks.install(Epoch(2), NetworkKey([0xa5; 32]));
    ks
}

/// One genuine sealed datagram from sender 1 under epoch 1.
fn genuine(payload: &[u8]) -> Vec<u8> {
    let mut tx = KeySet::new(SenderId(1), 1000);
    tx.install(Epoch(1), NetworkKey([0x5a; 32]));
    tx.set_tx(Epoch(1)).expect("epoch 1 installed");
    let mut d = vec![0u8; SEALED_HEADER_LEN + payload.len() + TAG_LEN];
    let (h, p, t) = split_sealed(&mut d).expect("long enough");
    p.copy_from_slice(payload);
    tx.seal(vni(4096), h, p, t).expect("tx key set");
    d
}

/// Parses and opens `d` with `rx`.
fn open(rx: &mut KeySet, d: &mut [u8]) -> Result<(), OpenError> {
    let Ok((Header::Sealed(h), _)) = vxlan::parse(d) else {
        return Err(OpenError::BadTag);
    };
    let (hb, p, t) = split_sealed(d).expect("parsed as sealed");
    rx.open(&h, hb, p, t)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn open_never_accepts_arbitrary_input(
        header in any::<[u8; SEALED_HEADER_LEN]>(), epoch in 0u32..4, sender: u32, counter: u64,
        mut payload in vec(any::<u8>(), 0..64), tag: [u8; TAG_LEN], use_raw: bool,
    ) {
        let mut rx = receiver();
        let sealed = SealedHeader { vni: vni(sender), epoch: Epoch(epoch), sender: SenderId(sender), counter };
        let mut bytes = header;
        if !use_raw {
            // A header that matches its bytes, so the AEAD itself is what says no.
            emit_sealed(&sealed, &mut bytes);
        }
        prop_assert!(rx.open(&sealed, &bytes, &mut payload, &tag).is_err());
    }

    #[test]
    fn open_never_accepts_a_modified_frame(
        body in vec(any::<u8>(), 14..100), flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in 0usize..3,
    ) {
        let original = genuine(&body);
        let mut d = original.clone();
        for (at, mask) in flips {
            let i = at.index(d.len());
            d[i] ^= mask;
        }
        d.truncate(d.len().saturating_sub(cut));
        let mut rx = receiver();
        if d != original {
            prop_assert!(open(&mut rx, &mut d).is_err());
        }
        // The forgery did not disturb the window: the genuine frame opens, once.
        let mut g = original.clone();
        prop_assert_eq!(open(&mut rx, &mut g), Ok(()));
        prop_assert_eq!(&g[SEALED_HEADER_LEN..g.len() - TAG_LEN], &body[..]);
        let mut g = original;
        prop_assert_eq!(open(&mut rx, &mut g), Err(OpenError::Replayed));
    }
}
