//! Fuzzes the forwarding core (proptest, on stable, in CI): arbitrary frames from a local
//! endpoint and arbitrary datagrams from the wire never panic, never deliver anything that
//! was not a valid frame, and every drop is counted.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dataplane::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec};
use dataplane::forward::{
    DropReason, Forwarder, HEADROOM, NetworkKeyBytes, TAILROOM, Update, Verdict,
};
use dataplane::types::{EndpointId, Epoch, Mac, OverlayIp, SenderId, Timestamp, UnderlayAddr, Vni};
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddr};

fn node() -> Forwarder {
    let mut f = Forwarder::new(SenderId(1), 0);
    let plain = Vni::new(4096).unwrap();
    let sealed = Vni::new(4097).unwrap();
    let peer = UnderlayAddr(SocketAddr::from(([192, 168, 77, 2], 4789)));
    let updates = vec![
        Update::AddNetwork {
            vni: plain,
            subnet: "10.10.0.0/24".parse().unwrap(),
            gateway: Some(Ipv4Addr::new(10, 10, 0, 1)),
            mtu: 1450,
            encrypted: false,
        },
        Update::AddNetwork {
            vni: sealed,
            subnet: "10.20.0.0/24".parse().unwrap(),
            gateway: None,
            mtu: 1418,
            encrypted: true,
        },
        Update::InstallKey {
            vni: sealed,
            epoch: Epoch(1),
            key: NetworkKeyBytes([3; 32]),
        },
        Update::SetTxKey {
            vni: sealed,
            epoch: Epoch(1),
        },
        local(1, plain, [10, 10, 0, 2]),
        local(2, sealed, [10, 20, 0, 2]),
        remote(plain, [10, 10, 0, 3], peer),
        remote(sealed, [10, 20, 0, 3], peer),
        Update::SetService(ServiceSpec {
            vni: plain,
            vip: VIP,
            algorithm: Algorithm::Maglev,
            backends: vec![BackendSpec {
                ip: Ipv4Addr::new(10, 10, 0, 3),
                state: BackendState::Active,
            }],
        }),
    ];
    for u in updates {
        f.handle_update(u).unwrap();
    }
    f
}

/// A VIP on the plain network, balanced to the remote endpoint 10.10.0.3.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 50);

fn local(id: u32, vni: Vni, ip: [u8; 4]) -> Update {
    let ip = Ipv4Addr::from(ip);
    Update::AddLocalEndpoint {
        id: EndpointId(id),
        vni,
        ip,
        mac: Mac::from_overlay_ip(OverlayIp(ip)),
    }
}

fn remote(vni: Vni, ip: [u8; 4], node: UnderlayAddr) -> Update {
    let ip = Ipv4Addr::from(ip);
    Update::AddRemoteEndpoint {
        vni,
        ip,
        mac: Mac::from_overlay_ip(OverlayIp(ip)),
        node,
    }
}

/// A frame that starts like one endpoint 1 could send, then arbitrary bytes: reaches deeper
/// than uniformly random bytes, which fail at the Ethernet header.
fn endpoint_frame() -> impl Strategy<Value = Vec<u8>> {
    let head = prop_oneof![
        Just(vec![]),
        Just(vec![
            2, 0x42, 10, 10, 0, 3, 2, 0x42, 10, 10, 0, 2, 0x08, 0x00
        ]),
        Just(vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0x42, 10, 10, 0, 2, 0x08, 0x06
        ]),
    ];
    (head, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(mut h, t)| {
        h.extend(t);
        h
    })
}

/// A well-formed Ethernet + IPv4 header from endpoint 1 to the VIP (TCP, UDP or ICMP, valid
/// total length) followed by arbitrary transport bytes: reaches the balancer's parsing.
fn vip_frame() -> impl Strategy<Value = Vec<u8>> {
    let proto = prop_oneof![Just(1u8), Just(6u8), Just(17u8), any::<u8>()];
    (proto, proptest::collection::vec(any::<u8>(), 0..80)).prop_map(|(proto, l4)| {
        let src = Ipv4Addr::new(10, 10, 0, 2);
        let mut frame = vec![2, 0x42, 10, 10, 0, 50, 2, 0x42, 10, 10, 0, 2, 0x08, 0x00];
        let header = etherparse::Ipv4Header::new(
            l4.len() as u16,
            64,
            etherparse::IpNumber(proto),
            src.octets(),
            VIP.octets(),
        )
        .unwrap();
        header.write(&mut frame).unwrap();
        frame.extend(l4);
        frame
    })
}

fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let head = prop_oneof![
        Just(vec![]),
        Just(vec![0x08, 0, 0, 0, 0, 0x10, 0x00, 0]),
        Just(vec![
            0x48, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 0, 1, 0, 0, 0, 2
        ]),
    ];
    (head, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(mut h, t)| {
        h.extend(t);
        h
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_endpoint_frames_never_panic_and_every_drop_is_counted(
        frames in proptest::collection::vec(
            (1u32..4, prop_oneof![endpoint_frame(), vip_frame()]),
            1..8,
        )
    ) {
        let mut f = node();
        let mut dropped = 0;
        for (from, frame) in frames {
            let mut buf = vec![0u8; HEADROOM + frame.len() + TAILROOM + 128];
            buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
            let range = HEADROOM..HEADROOM + frame.len();
            match f.handle_endpoint_frame(Timestamp(0), EndpointId(from), &mut buf, range) {
                Verdict::Drop(_) => dropped += 1,
                Verdict::ToEndpoint { frame, .. } => prop_assert!(frame.end <= buf.len()),
                Verdict::ToWire { datagram, .. } => prop_assert!(datagram.end <= buf.len()),
            }
        }
        let counted: u64 = DropReason::ALL.iter().map(|r| f.counters().drops(*r)).sum();
        // Isolation/no-route rejects answer with ICMP yet count a drop: at least `dropped`.
        prop_assert!(counted >= dropped);
    }

    #[test]
    fn arbitrary_datagrams_never_panic_and_forged_sealed_frames_never_pass(
        datagrams in proptest::collection::vec(datagram(), 1..8)
    ) {
        let mut f = node();
        let from = UnderlayAddr(SocketAddr::from(([192, 168, 77, 2], 4789)));
        for d in datagrams {
            let sealed = d.first().is_some_and(|b| b & 0x40 != 0);
            let mut buf = d.clone();
            let range = 0..buf.len();
            let verdict = f.handle_wire_datagram(Timestamp(0), from, &mut buf, range);
            if sealed {
                // Without the key nothing sealed can be forged.
                prop_assert!(matches!(verdict, Verdict::Drop(_)), "{verdict:?}");
            }
            prop_assert!(!matches!(verdict, Verdict::ToWire { .. }), "nodes never relay");
        }
    }
}
