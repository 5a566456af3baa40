//! The VIP step inside the forwarding core: ARP for VIPs, balancing across nodes, replies
//! rewritten back to the VIP, and the VIP's own answers as real frames.

use super::*;
use crate::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec};

const VIP: &str = "10.10.0.50";

/// The plain network's service at VIP .50 with backends 10.10.0.3 (on node A, local to the
/// client 10.10.0.2) and 10.10.0.4 (on node B); round-robin starts with the local one.
fn with_service(backends: &[&str]) -> (Forwarder, Forwarder) {
    let (mut a, b) = pair();
    let spec = ServiceSpec {
        vni: vni(PLAIN),
        vip: ip(VIP),
        algorithm: Algorithm::RoundRobin,
        backends: backends
            .iter()
            .map(|x| BackendSpec {
                ip: ip(x),
                state: BackendState::Active,
            })
            .collect(),
    };
    a.handle_update(Update::SetService(spec)).unwrap();
    (a, b)
}

fn tcp_frame(src: &str, sport: u16, dst: &str, dport: u16, syn: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2(mac(src).0, mac(dst).0)
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .tcp(sport, dport, 100, 65535);
    let b = if syn { b.syn() } else { b.ack(1) };
    b.write(&mut out, &[]).unwrap();
    out
}

fn ipv4_of(frame: &[u8]) -> etherparse::Ipv4Header {
    etherparse::Ipv4Header::from_slice(&frame[14..]).unwrap().0
}

#[test]
fn arp_for_a_vip_is_answered_with_its_mac() {
    let (mut a, _) = with_service(&["10.10.0.3"]);
    let (v, buf) = send(&mut a, 1, &arp_request(mac("10.10.0.2"), "10.10.0.2", VIP));
    let reply = bytes_of(&buf, &v);
    let arp = etherparse::ArpPacketSlice::from_slice(&reply[14..]).unwrap();
    assert_eq!(arp.sender_hw_addr(), &mac(VIP).0);
}

#[test]
fn a_flow_to_the_vip_reaches_local_and_remote_backends_and_replies_come_from_the_vip() {
    let (mut a, mut b) = with_service(&["10.10.0.3", "10.10.0.4"]);
    // First flow: the local backend, endpoint 2, with the client's address intact.
    let (v, buf) = send(&mut a, 1, &tcp_frame("10.10.0.2", 1000, VIP, 80, true));
    assert_to_endpoint(&v, 2);
    let frame = bytes_of(&buf, &v);
    assert_eq!(&frame[..6], &mac("10.10.0.3").0);
    let header = ipv4_of(&frame);
    assert_eq!(
        (header.source, header.destination),
        (ip("10.10.0.2").octets(), ip("10.10.0.3").octets())
    );
    // Its answer, sent by endpoint 2 to the client, comes from the VIP.
    let (v, buf) = send(
        &mut a,
        2,
        &tcp_frame("10.10.0.3", 80, "10.10.0.2", 1000, false),
    );
    assert_to_endpoint(&v, 1);
    assert_eq!(ipv4_of(&bytes_of(&buf, &v)).source, ip(VIP).octets());

    // Second flow: node B's backend, over the wire; node B delivers it as it is.
    let (v, buf) = send(&mut a, 1, &tcp_frame("10.10.0.2", 1001, VIP, 80, true));
    let datagram = bytes_of(&buf, &v);
    let (v, buf) = deliver(&mut b, node_addr(1), &datagram);
    assert_to_endpoint(&v, 1);
    let at_b = bytes_of(&buf, &v);
    assert_eq!(ipv4_of(&at_b).destination, ip("10.10.0.4").octets());
    assert_eq!(
        ipv4_of(&at_b).source,
        ip("10.10.0.2").octets(),
        "the backend sees the client"
    );
    // B's backend answers; node A rewrites the source on the way in.
    let (v, buf) = send(
        &mut b,
        1,
        &tcp_frame("10.10.0.4", 80, "10.10.0.2", 1001, false),
    );
    let datagram = bytes_of(&buf, &v);
    let (v, buf) = deliver(&mut a, node_addr(2), &datagram);
    assert_to_endpoint(&v, 1);
    assert_eq!(ipv4_of(&bytes_of(&buf, &v)).source, ip(VIP).octets());
    let stats = a.tables().balancer().stats();
    assert!(stats[0].backends.iter().all(|x| x.total == 1), "{stats:?}");
}

#[test]
fn a_vip_with_no_backend_resets_a_syn_with_a_valid_segment() {
    let (mut a, _) = with_service(&[]);
    let (v, buf) = send(&mut a, 1, &tcp_frame("10.10.0.2", 1000, VIP, 80, true));
    assert_to_endpoint(&v, 1);
    let reply = bytes_of(&buf, &v);
    let sliced = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
    let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!("{sliced:?}")
    };
    assert!(tcp.rst() && tcp.ack());
    assert_eq!((tcp.source_port(), tcp.destination_port()), (80, 1000));
    assert_eq!(tcp.acknowledgment_number(), 101, "SEG.SEQ + 1 for the SYN");
    let header = ipv4_of(&reply);
    assert_eq!(
        (header.source, header.destination),
        (ip(VIP).octets(), ip("10.10.0.2").octets())
    );
    assert_eq!(header.header_checksum, header.calc_header_checksum());
    assert_eq!(
        tcp.checksum(),
        tcp.to_header().calc_checksum_ipv4(&header, &[]).unwrap()
    );
    assert_eq!(&reply[6..12], &mac(VIP).0);
    assert_eq!(a.counters().vip_answers, 1);
}

#[test]
fn a_vip_answers_pings_and_refuses_udp_without_backends() {
    let (mut a, _) = with_service(&["10.10.0.4"]);
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(mac("10.10.0.2").0, mac(VIP).0)
        .ipv4(ip("10.10.0.2").octets(), ip(VIP).octets(), 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut ping, b"ping the service name")
        .unwrap();
    let (v, buf) = send(&mut a, 1, &ping);
    let reply = bytes_of(&buf, &v);
    let sliced = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = sliced.transport else {
        panic!()
    };
    assert!(matches!(icmp.icmp_type(), etherparse::Icmpv4Type::EchoReply(e) if e.id == 7));
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload())
    );
    assert_eq!(ipv4_of(&reply).source, ip(VIP).octets());

    let (mut a, _) = with_service(&[]);
    let (v, buf) = send(&mut a, 1, &udp_frame("10.10.0.2", VIP, b"dns?"));
    let reply = bytes_of(&buf, &v);
    let sliced = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = sliced.transport else {
        panic!()
    };
    assert!(matches!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port
        )
    ));
    assert_eq!(ipv4_of(&reply).source, ip(VIP).octets());
}

#[test]
fn service_updates_are_checked_against_the_network() {
    let (mut a, _) = with_service(&["10.10.0.3"]);
    let spec = |vip: &str, backend: &str| {
        Update::SetService(ServiceSpec {
            vni: vni(PLAIN),
            vip: ip(vip),
            algorithm: Algorithm::Maglev,
            backends: vec![BackendSpec {
                ip: ip(backend),
                state: BackendState::Active,
            }],
        })
    };
    assert!(matches!(
        a.handle_update(spec("10.10.0.3", "10.10.0.4")),
        Err(UpdateError::AddressInUse { .. })
    ));
    assert!(matches!(
        a.handle_update(spec("10.99.0.3", "10.10.0.4")),
        Err(UpdateError::OutsideSubnet { .. })
    ));
    assert!(matches!(
        a.handle_update(spec("10.10.0.60", "10.99.0.4")),
        Err(UpdateError::OutsideSubnet { .. })
    ));
    let endpoint = Update::AddLocalEndpoint {
        id: EndpointId(9),
        vni: vni(PLAIN),
        ip: ip(VIP),
        mac: mac(VIP),
    };
    assert!(matches!(
        a.handle_update(endpoint),
        Err(UpdateError::VipInUse { .. })
    ));
    // Services travel as JSON too.
    let json = r#"{"op":"set_service","vni":4096,"vip":"10.10.0.51","algorithm":"maglev","backends":[{"ip":"10.10.0.3","state":"draining"}]}"#;
    let update: Update = serde_json::from_str(json).unwrap();
    a.handle_update(update).unwrap();
    assert!(a.tables().balancer().is_vip(vni(PLAIN), ip("10.10.0.51")));
    a.handle_update(Update::RemoveNetwork { vni: vni(PLAIN) })
        .unwrap();
    assert!(!a.tables().balancer().is_vip(vni(PLAIN), ip(VIP)));
}
