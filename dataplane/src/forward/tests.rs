//! Unit tests of the forwarding core: plain function calls, two nodes' cores side by side.

use super::*;
use crate::types::{Epoch, Vni};
use etherparse::PacketBuilder;
use std::net::SocketAddr;

const PLAIN: u32 = 4096;
const SEALED: u32 = 4097;
const NOW: Timestamp = Timestamp(1);

fn vni(raw: u32) -> Vni {
    Vni::new(raw).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac(s: &str) -> Mac {
    Mac::from_overlay_ip(OverlayIp(ip(s)))
}

fn node_addr(last: u8) -> UnderlayAddr {
    UnderlayAddr(SocketAddr::from(([192, 168, 77, last], 4789)))
}

/// Attaches the plain network (10.10.0.0/24, MTU 1450) or the sealed one (10.20.0.0/24,
/// MTU 1418), each with its .1 as gateway.
fn add_network(raw: u32) -> Update {
    let (subnet, gateway, mtu, encrypted) = match raw {
        PLAIN => ("10.10.0.0/24", "10.10.0.1", 1450, false),
        _ => ("10.20.0.0/24", "10.20.0.1", 1418, true),
    };
    Update::AddNetwork {
        vni: vni(raw),
        subnet: subnet.parse().unwrap(),
        gateway: Some(ip(gateway)),
        mtu,
        encrypted,
    }
}

/// Node A (sender 1): endpoints 1 = 10.10.0.2 and 2 = 10.10.0.3 on the plain network,
/// 3 = 10.20.0.2 on the sealed one. Node B (sender 2): 1 = 10.10.0.4 (plain), 2 = 10.20.0.3
/// (sealed). Each knows the other's endpoints as remote; both hold key epoch 1 for sending.
fn pair() -> (Forwarder, Forwarder) {
    let mut a = Forwarder::new(SenderId(1), 0);
    let mut b = Forwarder::new(SenderId(2), 0);
    for f in [&mut a, &mut b] {
        f.handle_update(add_network(PLAIN)).unwrap();
        f.handle_update(add_network(SEALED)).unwrap();
        let key = NetworkKeyBytes([7; 32]);
        f.handle_update(Update::InstallKey {
            vni: vni(SEALED),
            epoch: Epoch(1),
            key,
        })
        .unwrap();
        f.handle_update(Update::SetTxKey {
            vni: vni(SEALED),
            epoch: Epoch(1),
        })
        .unwrap();
    }
    let local = |f: &mut Forwarder, id: u32, net: u32, addr: &str| {
        let (id, vni, ip, mac) = (EndpointId(id), vni(net), ip(addr), mac(addr));
        f.handle_update(Update::AddLocalEndpoint { id, vni, ip, mac })
            .unwrap();
    };
    let remote = |f: &mut Forwarder, net: u32, addr: &str, node: UnderlayAddr| {
        let (vni, ip, mac) = (vni(net), ip(addr), mac(addr));
        f.handle_update(Update::AddRemoteEndpoint { vni, ip, mac, node })
            .unwrap();
    };
    local(&mut a, 1, PLAIN, "10.10.0.2");
    local(&mut a, 2, PLAIN, "10.10.0.3");
    local(&mut a, 3, SEALED, "10.20.0.2");
    local(&mut b, 1, PLAIN, "10.10.0.4");
    local(&mut b, 2, SEALED, "10.20.0.3");
    for (addr, net) in [
        ("10.10.0.2", PLAIN),
        ("10.10.0.3", PLAIN),
        ("10.20.0.2", SEALED),
    ] {
        remote(&mut b, net, addr, node_addr(1));
    }
    for (addr, net) in [("10.10.0.4", PLAIN), ("10.20.0.3", SEALED)] {
        remote(&mut a, net, addr, node_addr(2));
    }
    (a, b)
}

/// A buffer holding `frame` at HEADROOM, with TAILROOM after it (and more, as a shell has).
fn buffer(frame: &[u8]) -> (Vec<u8>, Range<usize>) {
    let mut buf = vec![0u8; HEADROOM + frame.len() + 256];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    (buf, HEADROOM..HEADROOM + frame.len())
}

fn udp_frame(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(src).0, mac(dst).0)
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .udp(40000, 7)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn syn_frame(src: &str, dst: &str, mss: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(src).0, mac(dst).0)
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(mss)])
        .unwrap()
        .write(&mut out, &[])
        .unwrap();
    out
}

fn arp_request(sender_mac: Mac, sender: &str, target: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let arp = etherparse::ArpPacket::new(
        etherparse::ArpHardwareId::ETHERNET,
        etherparse::EtherType::IPV4,
        etherparse::ArpOperation::REQUEST,
        &sender_mac.0,
        &ip(sender).octets(),
        &[0; 6],
        &ip(target).octets(),
    )
    .unwrap();
    PacketBuilder::ethernet2(sender_mac.0, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .unwrap();
    out
}

fn send(f: &mut Forwarder, from: u32, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let (mut buf, range) = buffer(frame);
    let v = f.handle_endpoint_frame(NOW, EndpointId(from), &mut buf, range);
    (v, buf)
}

fn deliver(f: &mut Forwarder, from: UnderlayAddr, datagram: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = datagram.to_vec();
    let range = 0..buf.len();
    let v = f.handle_wire_datagram(NOW, from, &mut buf, range);
    (v, buf)
}

/// Asserts that `v` delivers to local endpoint `id`.
fn assert_to_endpoint(v: &Verdict, id: u32) {
    assert!(
        matches!(v, Verdict::ToEndpoint { endpoint, .. } if *endpoint == EndpointId(id)),
        "{v:?}"
    );
}

fn bytes_of(buf: &[u8], v: &Verdict) -> Vec<u8> {
    match v {
        Verdict::ToEndpoint { frame, .. } => buf[frame.clone()].to_vec(),
        Verdict::ToWire { datagram, .. } => buf[datagram.clone()].to_vec(),
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
    }
}

#[test]
fn drop_reasons_are_listed_in_declaration_order() {
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i, "{r:?}");
    }
}

#[test]
fn arp_is_answered_from_the_tables_for_endpoints_remote_endpoints_and_the_gateway() {
    let (mut a, _) = pair();
    for (target, want) in [
        ("10.10.0.3", "10.10.0.3"),
        ("10.10.0.4", "10.10.0.4"),
        ("10.10.0.1", "10.10.0.1"),
    ] {
        let (v, buf) = send(
            &mut a,
            1,
            &arp_request(mac("10.10.0.2"), "10.10.0.2", target),
        );
        assert_to_endpoint(&v, 1);
        let reply = bytes_of(&buf, &v);
        let (eth, payload) = etherparse::Ethernet2Header::from_slice(&reply).unwrap();
        assert_eq!(eth.destination, mac("10.10.0.2").0);
        let arp = etherparse::ArpPacketSlice::from_slice(payload).unwrap();
        assert_eq!(arp.operation(), etherparse::ArpOperation::REPLY);
        assert_eq!(arp.sender_hw_addr(), &mac(want).0);
        assert_eq!(arp.sender_protocol_addr(), &ip(target).octets());
        assert_eq!(arp.target_protocol_addr(), &ip("10.10.0.2").octets());
    }
    assert_eq!(a.counters().arp_replies, 3);
}

#[test]
fn arp_for_unknown_or_other_network_addresses_gets_no_answer() {
    let (mut a, _) = pair();
    for target in ["10.10.0.99", "10.20.0.3"] {
        let (v, _) = send(
            &mut a,
            1,
            &arp_request(mac("10.10.0.2"), "10.10.0.2", target),
        );
        assert_eq!(v, Verdict::Drop(DropReason::ArpUnknownTarget));
    }
    assert_eq!(a.counters().drops(DropReason::ArpUnknownTarget), 2);
}

#[test]
fn spoofed_source_mac_or_ip_is_dropped() {
    let (mut a, _) = pair();
    let mut frame = udp_frame("10.10.0.2", "10.10.0.3", b"x");
    frame[6..12].copy_from_slice(&mac("10.10.0.9").0);
    assert_eq!(
        send(&mut a, 1, &frame).0,
        Verdict::Drop(DropReason::SpoofedMac)
    );
    // Right MAC, someone else's IP.
    let mut frame = udp_frame("10.10.0.3", "10.10.0.4", b"x");
    frame[6..12].copy_from_slice(&mac("10.10.0.2").0);
    assert_eq!(
        send(&mut a, 1, &frame).0,
        Verdict::Drop(DropReason::SpoofedIp)
    );
    let arp = arp_request(mac("10.10.0.2"), "10.10.0.3", "10.10.0.4");
    assert_eq!(
        send(&mut a, 1, &arp).0,
        Verdict::Drop(DropReason::SpoofedIp)
    );
    assert_eq!(a.counters().drops(DropReason::SpoofedMac), 1);
    assert_eq!(a.counters().drops(DropReason::SpoofedIp), 2);
}

#[test]
fn frames_between_two_local_endpoints_stay_on_the_node() {
    let (mut a, _) = pair();
    let frame = udp_frame("10.10.0.2", "10.10.0.3", b"hello");
    let (v, buf) = send(&mut a, 1, &frame);
    assert_to_endpoint(&v, 2);
    assert_eq!(bytes_of(&buf, &v), frame);
    assert_eq!(a.counters().local_delivered, 1);
}

#[test]
fn a_plain_frame_crosses_to_the_other_node_as_rfc7348_vxlan() {
    let (mut a, mut b) = pair();
    let frame = udp_frame("10.10.0.2", "10.10.0.4", b"hello over vxlan");
    let (v, buf) = send(&mut a, 1, &frame);
    let Verdict::ToWire { dest, .. } = &v else {
        panic!("{v:?}")
    };
    assert_eq!(*dest, node_addr(2));
    let datagram = bytes_of(&buf, &v);
    // Byte for byte what a kernel vxlan device sends: flags 0x08, VNI, then the frame.
    assert_eq!(&datagram[..8], &[0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0]);
    assert_eq!(&datagram[8..], &frame[..]);

    let (v, buf) = deliver(&mut b, node_addr(1), &datagram);
    assert_to_endpoint(&v, 1);
    assert_eq!(bytes_of(&buf, &v), frame);
    assert_eq!(
        (a.counters().encapsulated, b.counters().decapsulated),
        (1, 1)
    );
    // Per network: one frame of its length out of a, into b.
    let out = a.counters().networks[&vni(PLAIN)];
    let inn = b.counters().networks[&vni(PLAIN)];
    assert_eq!((out.frames_out, out.bytes_out), (1, frame.len() as u64));
    assert_eq!((inn.frames_in, inn.bytes_in), (1, frame.len() as u64));
}

#[test]
fn overlay_traffic_is_counted_per_network_inner_frames_only_and_never_for_drops() {
    let (mut a, mut b) = pair();
    let plain = udp_frame("10.10.0.2", "10.10.0.4", b"plain");
    let sealed = udp_frame("10.20.0.2", "10.20.0.3", b"sealed, a little longer");
    for _ in 0..2 {
        let (v, buf) = send(&mut a, 1, &plain);
        assert_to_endpoint(&deliver(&mut b, node_addr(1), &bytes_of(&buf, &v)).0, 1);
    }
    let (v, buf) = send(&mut a, 3, &sealed);
    let datagram = bytes_of(&buf, &v);
    assert_to_endpoint(&deliver(&mut b, node_addr(1), &datagram).0, 2);
    // Not overlay traffic or not delivered: a local delivery, a replay, a spoofed frame.
    let _ = send(&mut a, 1, &udp_frame("10.10.0.2", "10.10.0.3", b"local"));
    assert_eq!(
        deliver(&mut b, node_addr(1), &datagram).0,
        Verdict::Drop(DropReason::Replayed)
    );
    let _ = send(&mut a, 1, &udp_frame("10.10.0.9", "10.10.0.4", b"spoofed"));

    let traffic = |f: &Forwarder, raw| f.counters().networks[&vni(raw)];
    let (plain_len, sealed_len) = (plain.len() as u64, sealed.len() as u64);
    let out = (traffic(&a, PLAIN), traffic(&a, SEALED));
    assert_eq!((out.0.frames_out, out.0.bytes_out), (2, 2 * plain_len));
    // The inner frame's length, not the sealed datagram's.
    assert_eq!((out.1.frames_out, out.1.bytes_out), (1, sealed_len));
    assert_eq!((out.0.frames_in, out.1.frames_in), (0, 0));
    let inn = (traffic(&b, PLAIN), traffic(&b, SEALED));
    assert_eq!((inn.0.frames_in, inn.0.bytes_in), (2, 2 * plain_len));
    assert_eq!((inn.1.frames_in, inn.1.bytes_in), (1, sealed_len));
    assert_eq!((inn.0.frames_out, inn.1.frames_out), (0, 0));
}

#[test]
fn a_sealed_frame_hides_its_payload_and_opens_on_the_other_node() {
    let (mut a, mut b) = pair();
    let marker = b"PLAINTEXT-MARKER-0123456789";
    let frame = udp_frame("10.20.0.2", "10.20.0.3", marker);
    let (v, buf) = send(&mut a, 3, &frame);
    let datagram = bytes_of(&buf, &v);
    assert_eq!(datagram.len(), frame.len() + SEALED_HEADER_LEN + TAG_LEN);
    assert!(
        !datagram.windows(marker.len()).any(|w| w == marker),
        "plaintext leaked"
    );

    let (v, buf) = deliver(&mut b, node_addr(1), &datagram);
    assert_to_endpoint(&v, 2);
    assert_eq!(bytes_of(&buf, &v), frame);

    // The same datagram again is a replay.
    assert_eq!(
        deliver(&mut b, node_addr(1), &datagram).0,
        Verdict::Drop(DropReason::Replayed)
    );
    // Any flipped byte (header, payload or tag) fails authentication, or the header parse.
    for at in [9, SEALED_HEADER_LEN + 20, datagram.len() - 1] {
        let (v, buf) = send(&mut a, 3, &frame);
        let mut fresh = bytes_of(&buf, &v);
        fresh[at] ^= 0x01;
        let v = deliver(&mut b, node_addr(1), &fresh).0;
        // Byte 9 is in the epoch field: the key lookup fails before authentication.
        let want = if at == 9 {
            DropReason::UnknownEpoch
        } else {
            DropReason::BadTag
        };
        assert_eq!(v, Verdict::Drop(want), "flip at {at}");
    }
    assert_eq!(b.counters().drops(DropReason::BadTag), 2);
}

#[test]
fn plain_datagrams_on_a_sealed_network_and_unknown_vnis_are_dropped() {
    let (mut a, mut b) = pair();
    let frame = udp_frame("10.20.0.2", "10.20.0.3", b"sneaky");
    let mut datagram = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0];
    datagram.extend_from_slice(&frame);
    assert_eq!(
        deliver(&mut b, node_addr(1), &datagram).0,
        Verdict::Drop(DropReason::PlainOnSealed)
    );
    datagram[6] = 0x07; // VNI 4103: not attached
    assert_eq!(
        deliver(&mut b, node_addr(1), &datagram).0,
        Verdict::Drop(DropReason::UnknownVni)
    );
    // A sealed datagram to the plain network.
    let (v, buf) = send(&mut a, 3, &frame);
    let mut sealed = bytes_of(&buf, &v);
    sealed[6] = 0x00;
    assert_eq!(
        deliver(&mut b, node_addr(1), &sealed).0,
        Verdict::Drop(DropReason::SealedOnPlain)
    );
}

#[test]
fn a_node_cannot_speak_for_another_nodes_endpoints() {
    let (_, mut b) = pair();
    // 10.10.0.2 lives on node A (192.168.77.1); node .3 sends a frame claiming to be it.
    let mut datagram = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0];
    datagram.extend_from_slice(&udp_frame("10.10.0.2", "10.10.0.4", b"x"));
    assert_eq!(
        deliver(&mut b, node_addr(3), &datagram).0,
        Verdict::Drop(DropReason::SpoofedRemote)
    );
    // The rightful node passes; a destination that is not local to B does not.
    assert!(matches!(
        deliver(&mut b, node_addr(1), &datagram).0,
        Verdict::ToEndpoint { .. }
    ));
    let mut to_a = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0];
    to_a.extend_from_slice(&udp_frame("10.10.0.2", "10.10.0.3", b"x"));
    assert_eq!(
        deliver(&mut b, node_addr(1), &to_a).0,
        Verdict::Drop(DropReason::NotLocal)
    );
}

#[test]
fn traffic_to_another_network_is_refused_at_once_and_counted_as_isolation() {
    let (mut a, _) = pair();
    // Endpoint 1 (plain network) routes a packet for 10.20.0.3 (sealed network) via its gateway.
    let mut frame = udp_frame("10.10.0.2", "10.20.0.3", b"cross");
    frame[0..6].copy_from_slice(&mac("10.10.0.1").0);
    let (v, buf) = send(&mut a, 1, &frame);
    let Verdict::ToEndpoint {
        endpoint: EndpointId(1),
        ..
    } = v
    else {
        panic!("{v:?}")
    };
    let reply = bytes_of(&buf, &v);
    let sliced = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ipv4)) = &sliced.net else {
        panic!()
    };
    assert_eq!(ipv4.header().source_addr(), ip("10.10.0.1"));
    assert_eq!(ipv4.header().destination_addr(), ip("10.10.0.2"));
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &sliced.transport else {
        panic!()
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 13));
    assert_eq!(a.counters().drops(DropReason::Isolation), 1);

    // An address on no network is a plain no-route, answered with host unreachable.
    let mut frame = udp_frame("10.10.0.2", "10.99.0.3", b"nowhere");
    frame[0..6].copy_from_slice(&mac("10.10.0.1").0);
    let (v, buf) = send(&mut a, 1, &frame);
    let reply = bytes_of(&buf, &v);
    assert_eq!(&reply[34..36], &[3, 1]);
    assert_eq!(a.counters().drops(DropReason::NoRoute), 1);
    assert_eq!(a.counters().icmp_rejects, 2);
}

#[test]
fn broadcast_and_multicast_are_not_forwarded() {
    let (mut a, _) = pair();
    for dst in ["10.10.0.255", "255.255.255.255", "224.0.0.251"] {
        let frame = udp_frame("10.10.0.2", dst, b"x");
        assert_eq!(
            send(&mut a, 1, &frame).0,
            Verdict::Drop(DropReason::NotUnicast),
            "{dst}"
        );
    }
}

#[test]
fn a_syn_mss_larger_than_the_overlay_allows_is_clamped() {
    let (mut a, _) = pair();
    let (v, buf) = send(&mut a, 1, &syn_frame("10.10.0.2", "10.10.0.4", 1460));
    let datagram = bytes_of(&buf, &v);
    let sliced = etherparse::SlicedPacket::from_ethernet(&datagram[8..]).unwrap();
    let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!()
    };
    let mss = tcp.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    });
    assert_eq!(mss, Some(1410));
    assert_eq!(a.counters().mss_clamped, 1);
}

#[test]
fn a_buffer_without_headroom_is_refused_not_overrun() {
    let (mut a, _) = pair();
    let mut buf = udp_frame("10.10.0.2", "10.10.0.4", b"x");
    let range = 0..buf.len();
    let v = a.handle_endpoint_frame(NOW, EndpointId(1), &mut buf, range);
    assert_eq!(v, Verdict::Drop(DropReason::NoRoom));
}

#[test]
fn rotating_keys_in_the_hitless_order_loses_no_frame() {
    let (mut a, mut b) = pair();
    let sealed = vni(SEALED);
    let frame = udp_frame("10.20.0.2", "10.20.0.3", b"rotate");
    let mut in_flight = Vec::new();
    let seal_one = |a: &mut Forwarder| {
        let (v, buf) = send(a, 3, &frame);
        bytes_of(&buf, &v)
    };
    in_flight.push(seal_one(&mut a));
    // 1. the new key goes RX-only to both nodes
    for f in [&mut a, &mut b] {
        let key = NetworkKeyBytes([9; 32]);
        f.handle_update(Update::InstallKey {
            vni: sealed,
            epoch: Epoch(2),
            key,
        })
        .unwrap();
    }
    in_flight.push(seal_one(&mut a));
    // 2. the senders switch
    for f in [&mut a, &mut b] {
        f.handle_update(Update::SetTxKey {
            vni: sealed,
            epoch: Epoch(2),
        })
        .unwrap();
    }
    in_flight.push(seal_one(&mut a));
    // frames sealed under both epochs, still in flight, all open
    for d in &in_flight {
        assert!(matches!(
            deliver(&mut b, node_addr(1), d).0,
            Verdict::ToEndpoint { .. }
        ));
    }
    // 3. the old key is retired; an old-epoch frame arriving late is now unknown
    let late = {
        let mut c = pair().0;
        let (v, buf) = send(&mut c, 3, &frame);
        bytes_of(&buf, &v)
    };
    b.handle_update(Update::RetireKey {
        vni: sealed,
        epoch: Epoch(1),
    })
    .unwrap();
    assert_eq!(
        deliver(&mut b, node_addr(1), &late).0,
        Verdict::Drop(DropReason::UnknownEpoch)
    );
    assert_eq!(
        b.tables().network(sealed).unwrap().key_epochs(),
        Some((vec![Epoch(2)], Some(Epoch(2))))
    );
}

#[test]
fn updates_that_conflict_are_refused_and_change_nothing() {
    let (mut a, _) = pair();
    let e = |id, net, addr: &str| Update::AddLocalEndpoint {
        id: EndpointId(id),
        vni: vni(net),
        ip: ip(addr),
        mac: mac(addr),
    };
    assert_eq!(
        a.handle_update(e(9, PLAIN, "10.10.0.2")),
        Err(UpdateError::AddressInUse {
            vni: vni(PLAIN),
            ip: ip("10.10.0.2")
        })
    );
    assert!(matches!(
        a.handle_update(e(9, PLAIN, "10.30.0.2")),
        Err(UpdateError::OutsideSubnet { .. })
    ));
    assert_eq!(
        a.handle_update(e(1, PLAIN, "10.10.0.50")),
        Err(UpdateError::EndpointExists { id: EndpointId(1) })
    );
    assert_eq!(
        a.handle_update(e(9, 5000, "10.10.0.50")),
        Err(UpdateError::UnknownNetwork(vni(5000)))
    );
    let retire_tx = Update::RetireKey {
        vni: vni(SEALED),
        epoch: Epoch(1),
    };
    assert!(matches!(
        a.handle_update(retire_tx),
        Err(UpdateError::Key { .. })
    ));
    let key_on_plain = Update::SetTxKey {
        vni: vni(PLAIN),
        epoch: Epoch(1),
    };
    assert_eq!(
        a.handle_update(key_on_plain),
        Err(UpdateError::NotEncrypted(vni(PLAIN)))
    );
    // Removing a network forgets its endpoints.
    a.handle_update(Update::RemoveNetwork { vni: vni(PLAIN) })
        .unwrap();
    assert!(a.tables().endpoint(EndpointId(1)).is_none());
    assert!(a.tables().endpoint(EndpointId(3)).is_some());
}

#[test]
fn updates_round_trip_through_json() {
    let u = Update::AddRemoteEndpoint {
        vni: vni(PLAIN),
        ip: ip("10.10.0.4"),
        mac: mac("10.10.0.4"),
        node: node_addr(2),
    };
    let json = serde_json::to_string(&u).unwrap();
    assert!(json.contains("\"op\":\"add_remote_endpoint\""), "{json}");
    assert_eq!(serde_json::from_str::<Update>(&json).unwrap(), u);
}

#[test]
fn a_network_removed_and_added_again_never_reuses_a_nonce() {
    let (mut a, _) = pair();
    let frame = udp_frame("10.20.0.2", "10.20.0.3", b"before");
    let counter_of = |buf: &[u8], v: &Verdict| {
        let d = bytes_of(buf, v);
        u64::from_be_bytes(d[16..24].try_into().unwrap())
    };
    let (v, buf) = send(&mut a, 3, &frame);
    let before = counter_of(&buf, &v);
    let sealed = vni(SEALED);
    a.handle_update(Update::RemoveNetwork { vni: sealed })
        .unwrap();
    a.handle_update(add_network(SEALED)).unwrap();
    let key = NetworkKeyBytes([7; 32]);
    a.handle_update(Update::InstallKey {
        vni: sealed,
        epoch: Epoch(1),
        key,
    })
    .unwrap();
    a.handle_update(Update::SetTxKey {
        vni: sealed,
        epoch: Epoch(1),
    })
    .unwrap();
    let (id, addr, m) = (EndpointId(3), ip("10.20.0.2"), mac("10.20.0.2"));
    a.handle_update(Update::AddLocalEndpoint {
        id,
        vni: sealed,
        ip: addr,
        mac: m,
    })
    .unwrap();
    let remote = Update::AddRemoteEndpoint {
        vni: sealed,
        ip: ip("10.20.0.3"),
        mac: mac("10.20.0.3"),
        node: node_addr(2),
    };
    a.handle_update(remote).unwrap();
    let (v, buf) = send(&mut a, 3, &frame);
    assert!(
        counter_of(&buf, &v) > before,
        "the counter restarted under the same key"
    );
}

#[test]
fn a_frame_longer_than_the_network_mtu_is_refused() {
    let (mut a, _) = pair();
    // The plain network's MTU is 1450: 1450 bytes of IP fit, 1451 do not.
    let fits = udp_frame("10.10.0.2", "10.10.0.4", &[0; 1450 - 28]);
    assert!(matches!(send(&mut a, 1, &fits).0, Verdict::ToWire { .. }));
    let big = udp_frame("10.10.0.2", "10.10.0.4", &[0; 1451 - 28]);
    assert_eq!(send(&mut a, 1, &big).0, Verdict::Drop(DropReason::TooBig));
}

#[test]
fn a_node_cannot_put_another_mac_on_the_frames_it_delivers() {
    let (_, mut b) = pair();
    let mut frame = udp_frame("10.10.0.2", "10.10.0.4", b"x");
    frame[6..12].copy_from_slice(&mac("10.10.0.1").0); // the gateway's MAC
    let mut datagram = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0];
    datagram.extend_from_slice(&frame);
    let (v, buf) = deliver(&mut b, node_addr(1), &datagram);
    assert_eq!(&bytes_of(&buf, &v)[6..12], &mac("10.10.0.2").0);
}

mod vip;
