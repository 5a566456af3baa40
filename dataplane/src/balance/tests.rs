//! The balancer by plain calls: IPv4 packets in, rewrites and decisions out, a virtual clock.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::*;
use crate::types::Timestamp;
use std::collections::BTreeMap;

fn vni() -> Vni {
    Vni::new(4096).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const VIP: &str = "10.0.0.2";

fn at(secs: u64) -> Timestamp {
    Timestamp(secs * 1_000_000_000 + 1)
}

fn spec(algorithm: Algorithm, backends: &[&str]) -> ServiceSpec {
    ServiceSpec {
        vni: vni(),
        vip: ip(VIP),
        algorithm,
        backends: backends
            .iter()
            .map(|b| BackendSpec {
                ip: ip(b),
                state: BackendState::Active,
            })
            .collect(),
    }
}

fn balancer(algorithm: Algorithm, backends: &[&str]) -> Balancer {
    let mut b = Balancer::new(ConntrackConfig::default(), 7);
    b.set_service(&spec(algorithm, backends));
    b
}

fn backends(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{}", 10 + i)).collect()
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: &str) -> Vec<u8> {
    let mut b =
        PacketBuilder::ipv4(ip(src).octets(), ip(dst).octets(), 64).tcp(sport, dport, 1000, 65535);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(5000),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => b,
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .udp(sport, dport)
        .write(&mut out, b"hi")
        .unwrap();
    out
}

fn dst_of(packet: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19])
}

fn src_of(packet: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15])
}

/// Checksums of a rewritten packet still verify (etherparse re-parses and checks them).
fn assert_checksums(packet: &[u8]) {
    let parsed = etherparse::SlicedPacket::from_ip(packet).unwrap();
    let etherparse::NetSlice::Ipv4(ipv4) = parsed.net.unwrap() else {
        panic!()
    };
    let header = ipv4.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "IPv4 checksum"
    );
    if let Some(etherparse::TransportSlice::Tcp(t)) = parsed.transport {
        let expect = t
            .to_header()
            .calc_checksum_ipv4(&header, t.payload())
            .unwrap();
        assert_eq!(t.checksum(), expect, "TCP checksum");
    }
}

/// Opens a TCP flow from `client:port` and returns the backend it went to.
fn open(b: &mut Balancer, now: Timestamp, client: &str, port: u16) -> Ipv4Addr {
    let mut syn = tcp(client, port, VIP, 80, "S");
    match b.outbound(now, vni(), &mut syn) {
        Outbound::Forward(backend) => {
            assert_eq!(dst_of(&syn), backend);
            assert_checksums(&syn);
            backend
        }
        other => panic!("SYN from {client}:{port}: {other:?}"),
    }
}

fn shares(b: &mut Balancer, flows: u16) -> BTreeMap<Ipv4Addr, u32> {
    let mut counts = BTreeMap::new();
    for port in 0..flows {
        let client = format!("10.0.1.{}", 1 + port % 200);
        *counts
            .entry(open(b, at(1), &client, 10000 + port))
            .or_insert(0) += 1;
    }
    counts
}

fn max_over_mean(counts: &BTreeMap<Ipv4Addr, u32>, n: usize) -> f64 {
    let total: u32 = counts.values().sum();
    let max = *counts.values().max().unwrap();
    assert_eq!(counts.len(), n, "every backend got flows: {counts:?}");
    f64::from(max) / (f64::from(total) / n as f64)
}

#[test]
fn round_robin_gives_every_backend_its_exact_share() {
    let list = backends(4);
    let names: Vec<&str> = list.iter().map(String::as_str).collect();
    let mut b = balancer(Algorithm::RoundRobin, &names);
    let counts = shares(&mut b, 4000);
    assert!(counts.values().all(|&c| c == 1000), "{counts:?}");
    let stats = b.stats();
    assert!(
        stats[0]
            .backends
            .iter()
            .all(|be| be.total == 1000 && be.active == 1000)
    );
}

#[test]
fn least_connections_fills_the_emptiest_backend() {
    let mut b = balancer(Algorithm::LeastConnections, &["10.0.0.10", "10.0.0.11"]);
    // Two flows, one on each; close the first: the next two go to the freed one, then alternate.
    let first = open(&mut b, at(1), "10.0.1.1", 1000);
    let second = open(&mut b, at(1), "10.0.1.1", 1001);
    assert_ne!(first, second);
    let mut rst = tcp("10.0.1.1", 1000, VIP, 80, "R");
    assert!(matches!(
        b.outbound(at(2), vni(), &mut rst),
        Outbound::Forward(_)
    ));
    assert_eq!(
        open(&mut b, at(3), "10.0.1.1", 1002),
        first,
        "the backend with no open flow"
    );
    let counts = shares(&mut b, 1000);
    assert!(max_over_mean(&counts, 2) <= 1.01, "{counts:?}");
}

#[test]
fn two_choices_spreads_evenly() {
    let list = backends(8);
    let names: Vec<&str> = list.iter().map(String::as_str).collect();
    let mut b = balancer(Algorithm::TwoChoices, &names);
    let counts = shares(&mut b, 8000);
    assert!(max_over_mean(&counts, 8) <= 1.05, "{counts:?}");
}

#[test]
fn maglev_picks_the_same_backend_on_every_node_and_moves_few_flows_when_one_goes() {
    let list = backends(10);
    let names: Vec<&str> = list.iter().map(String::as_str).collect();
    // Two nodes, backends listed in different orders, another seed.
    let mut node_a = balancer(Algorithm::Maglev, &names);
    let mut reversed = names.clone();
    reversed.reverse();
    let mut node_b = Balancer::new(ConntrackConfig::default(), 99);
    node_b.set_service(&spec(Algorithm::Maglev, &reversed));
    let flows: Vec<(String, u16)> = (0..5000u16)
        .map(|i| (format!("10.0.{}.{}", 1 + i / 250, 1 + i % 250), 20000 + i))
        .collect();
    let before: Vec<Ipv4Addr> = flows
        .iter()
        .map(|(c, p)| open(&mut node_a, at(1), c, *p))
        .collect();
    for ((c, p), want) in flows.iter().zip(&before) {
        assert_eq!(open(&mut node_b, at(1), c, *p), *want, "{c}:{p}");
    }
    let counts: BTreeMap<Ipv4Addr, u32> = before.iter().fold(BTreeMap::new(), |mut m, b| {
        *m.entry(*b).or_insert(0) += 1;
        m
    });
    assert!(max_over_mean(&counts, 10) <= 1.15, "{counts:?}");
    // One backend removed: only about its tenth moves (new flows on a third node).
    let mut node_c = balancer(Algorithm::Maglev, &names[1..]);
    let moved = flows
        .iter()
        .zip(&before)
        .filter(|((c, p), was)| open(&mut node_c, at(1), c, *p) != **was)
        .count();
    let fraction = moved as f64 / flows.len() as f64;
    assert!(fraction <= 0.11, "{fraction} of the flows moved");
}

#[test]
fn replies_come_back_from_the_vip_and_backends_see_the_client() {
    let mut b = balancer(Algorithm::RoundRobin, &["10.0.0.10"]);
    let backend = open(&mut b, at(1), "10.0.1.5", 40000);
    let mut syn_ack = tcp(&backend.to_string(), 80, "10.0.1.5", 40000, "SA");
    assert!(b.inbound(at(1), vni(), &mut syn_ack));
    assert_eq!(
        (src_of(&syn_ack), dst_of(&syn_ack)),
        (ip(VIP), ip("10.0.1.5"))
    );
    assert_checksums(&syn_ack);
    // The client's next segments follow the flow; another client's do not belong to it.
    let mut ack = tcp("10.0.1.5", 40000, VIP, 80, "A");
    assert_eq!(
        b.outbound(at(2), vni(), &mut ack),
        Outbound::Forward(backend)
    );
    assert_eq!(
        src_of(&ack),
        ip("10.0.1.5"),
        "no SNAT: the backend sees the real client"
    );
    let mut stranger = tcp(&backend.to_string(), 80, "10.0.1.6", 40000, "A");
    assert!(!b.inbound(at(2), vni(), &mut stranger));
    assert_eq!(src_of(&stranger), backend);
    // Not a VIP: untouched.
    let mut other = tcp("10.0.1.5", 40000, "10.0.0.99", 80, "S");
    assert_eq!(b.outbound(at(2), vni(), &mut other), Outbound::NotVip);
}

#[test]
fn with_no_backend_tcp_is_reset_udp_refused_and_stray_segments_reset() {
    let mut b = balancer(Algorithm::RoundRobin, &[]);
    let mut syn = tcp("10.0.1.5", 40000, VIP, 80, "S");
    assert_eq!(
        b.outbound(at(1), vni(), &mut syn),
        Outbound::Answer(Answer::Reset)
    );
    let mut dgram = udp("10.0.1.5", 40000, VIP, 53);
    assert_eq!(
        b.outbound(at(1), vni(), &mut dgram),
        Outbound::Answer(Answer::PortUnreachable)
    );
    let mut ping = Vec::new();
    PacketBuilder::ipv4(ip("10.0.1.5").octets(), ip(VIP).octets(), 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"x")
        .unwrap();
    assert_eq!(
        b.outbound(at(1), vni(), &mut ping.clone()),
        Outbound::Answer(Answer::PortUnreachable)
    );
    assert_eq!(b.counters().no_backend, 3);
    // With a backend: pings are answered by the VIP, stray ACKs reset.
    b.set_service(&spec(Algorithm::RoundRobin, &["10.0.0.10"]));
    assert_eq!(
        b.outbound(at(1), vni(), &mut ping),
        Outbound::Answer(Answer::EchoReply)
    );
    let mut stray = tcp("10.0.1.5", 40001, VIP, 80, "A");
    assert_eq!(
        b.outbound(at(1), vni(), &mut stray),
        Outbound::Answer(Answer::Reset)
    );
    assert_eq!(b.counters().untracked, 1);
}

#[test]
fn a_draining_backend_keeps_its_flows_and_gets_no_new_one() {
    let mut b = balancer(Algorithm::RoundRobin, &["10.0.0.10", "10.0.0.11"]);
    let first = open(&mut b, at(1), "10.0.1.5", 1000);
    let mut drained = spec(Algorithm::RoundRobin, &["10.0.0.10", "10.0.0.11"]);
    drained
        .backends
        .iter_mut()
        .filter(|x| x.ip == first)
        .for_each(|x| x.state = BackendState::Draining);
    b.set_service(&drained);
    for port in 1001..1011 {
        assert_ne!(
            open(&mut b, at(2), "10.0.1.5", port),
            first,
            "no new flow to the draining backend"
        );
    }
    let mut data = tcp("10.0.1.5", 1000, VIP, 80, "A");
    assert_eq!(
        b.outbound(at(3), vni(), &mut data),
        Outbound::Forward(first),
        "its old flow carries on"
    );
    assert_eq!(
        b.service(vni(), ip(VIP))
            .unwrap()
            .backend(first)
            .unwrap()
            .active,
        1
    );
}

#[test]
fn a_removed_backends_flows_are_reset_and_new_flows_avoid_it() {
    let mut b = balancer(Algorithm::RoundRobin, &["10.0.0.10", "10.0.0.11"]);
    let gone = open(&mut b, at(1), "10.0.1.5", 1000);
    let stays = open(&mut b, at(1), "10.0.1.5", 1001);
    assert_ne!(gone, stays);
    b.set_service(&spec(Algorithm::RoundRobin, &[&stays.to_string()]));
    let mut data = tcp("10.0.1.5", 1000, VIP, 80, "A");
    assert_eq!(
        b.outbound(at(2), vni(), &mut data),
        Outbound::Answer(Answer::Reset)
    );
    let mut again = tcp("10.0.1.5", 1000, VIP, 80, "A");
    assert_eq!(
        b.outbound(at(2), vni(), &mut again),
        Outbound::Answer(Answer::Reset),
        "still no flow"
    );
    let mut other = tcp("10.0.1.5", 1001, VIP, 80, "A");
    assert_eq!(
        b.outbound(at(2), vni(), &mut other),
        Outbound::Forward(stays)
    );
    for port in 2000..2010 {
        assert_eq!(open(&mut b, at(3), "10.0.1.5", port), stays);
    }
    assert_eq!(b.counters().backend_gone, 1);
    // The service removed: every flow is reset.
    b.remove_service(vni(), ip(VIP));
    assert!(!b.is_vip(vni(), ip(VIP)));
}

#[test]
fn idle_flows_outlive_dockers_900_seconds_and_expire_after_their_own_timeout() {
    let mut b = balancer(Algorithm::RoundRobin, &["10.0.0.10"]);
    let backend = open(&mut b, at(0), "10.0.1.5", 1000);
    let mut syn_ack = tcp(&backend.to_string(), 80, "10.0.1.5", 1000, "SA");
    assert!(b.inbound(at(0), vni(), &mut syn_ack));
    // An hour of silence (Docker's IPVS forgets after 900 s): the flow still maps.
    b.expire(at(3600));
    let mut data = tcp("10.0.1.5", 1000, VIP, 80, "A");
    assert_eq!(
        b.outbound(at(3600), vni(), &mut data),
        Outbound::Forward(backend)
    );
    let day = ConntrackConfig::default().tcp_established.as_secs();
    assert!(day > 900);
    b.expire(at(3600 + day + 1));
    assert_eq!(b.conntrack_len(), 0);
    assert_eq!(b.counters().expired, 1);
    assert_eq!(
        b.service(vni(), ip(VIP))
            .unwrap()
            .backend(backend)
            .unwrap()
            .active,
        0
    );
    // A half-open flow (the backend never answered) goes after the short opening timeout.
    open(&mut b, at(5000), "10.0.1.6", 1000);
    b.expire(at(5000
        + ConntrackConfig::default().tcp_opening.as_secs()
        + 1));
    assert_eq!(b.conntrack_len(), 0);
}

#[test]
fn fin_both_ways_closes_the_flow_and_a_new_syn_reuses_the_port() {
    let mut b = balancer(Algorithm::RoundRobin, &["10.0.0.10", "10.0.0.11"]);
    let backend = open(&mut b, at(1), "10.0.1.5", 1000);
    let be = backend.to_string();
    assert!(b.inbound(at(1), vni(), &mut tcp(&be, 80, "10.0.1.5", 1000, "SA")));
    assert!(matches!(
        b.outbound(at(2), vni(), &mut tcp("10.0.1.5", 1000, VIP, 80, "FA")),
        Outbound::Forward(_)
    ));
    assert!(b.inbound(at(2), vni(), &mut tcp(&be, 80, "10.0.1.5", 1000, "FA")));
    let service = b.service(vni(), ip(VIP)).unwrap();
    assert_eq!(
        service.backend(backend).unwrap().active,
        0,
        "closed: no longer counted open"
    );
    // The last ACK still maps; then the port is reused for a new flow (round-robin: the other).
    assert_eq!(
        b.outbound(at(3), vni(), &mut tcp("10.0.1.5", 1000, VIP, 80, "A")),
        Outbound::Forward(backend)
    );
    assert_ne!(open(&mut b, at(4), "10.0.1.5", 1000), backend);
    b.expire(at(4 + ConntrackConfig::default().tcp_closing.as_secs() + 1));
    assert_eq!(b.conntrack_len(), 1, "only the new flow is left");
}

#[test]
fn a_syn_flood_beyond_the_maximum_evicts_half_open_flows_first() {
    let config = ConntrackConfig {
        max_entries: 100,
        ..ConntrackConfig::default()
    };
    let mut b = Balancer::new(config, 1);
    b.set_service(&spec(Algorithm::RoundRobin, &["10.0.0.10", "10.0.0.11"]));
    // Ten established flows, then ten thousand SYNs from spoofed ports.
    let mut established = Vec::new();
    for port in 0..10 {
        let backend = open(&mut b, at(1), "10.0.1.5", port);
        assert!(b.inbound(
            at(1),
            vni(),
            &mut tcp(&backend.to_string(), 80, "10.0.1.5", port, "SA")
        ));
        established.push((port, backend));
    }
    for i in 0..10_000u32 {
        let client = format!("10.0.{}.{}", 2 + i / 60_000, 1 + (i / 250) % 250);
        open(&mut b, at(2), &client, (i % 250) as u16 + 30000);
    }
    assert_eq!(b.conntrack_len(), 100, "bounded");
    assert_eq!(b.counters().evicted, 10_000 + 10 - 100);
    for (port, backend) in established {
        let mut data = tcp("10.0.1.5", port, VIP, 80, "A");
        assert_eq!(
            b.outbound(at(3), vni(), &mut data),
            Outbound::Forward(backend),
            "established flows survive"
        );
    }
    let open_counts: u32 = b
        .service(vni(), ip(VIP))
        .unwrap()
        .backends
        .iter()
        .map(|x| x.active)
        .sum();
    assert_eq!(open_counts, 100, "open counts follow evictions");
}

#[test]
fn udp_flows_keep_their_backend_until_idle() {
    let mut b = balancer(Algorithm::RoundRobin, &["10.0.0.10", "10.0.0.11"]);
    let mut first = udp("10.0.1.5", 5353, VIP, 53);
    let Outbound::Forward(backend) = b.outbound(at(1), vni(), &mut first) else {
        panic!()
    };
    for t in 2..10 {
        assert_eq!(
            b.outbound(at(t), vni(), &mut udp("10.0.1.5", 5353, VIP, 53)),
            Outbound::Forward(backend)
        );
    }
    let mut reply = udp(&backend.to_string(), 53, "10.0.1.5", 5353);
    assert!(b.inbound(at(10), vni(), &mut reply));
    assert_eq!(src_of(&reply), ip(VIP));
    let timeout = ConntrackConfig::default().datagram;
    b.expire(at(10 + timeout.as_secs() + 1));
    assert_eq!(b.conntrack_len(), 0);
}

#[test]
fn malformed_and_unbalanceable_packets_never_panic() {
    let mut b = balancer(Algorithm::Maglev, &["10.0.0.10"]);
    let mut frag = tcp("10.0.1.5", 1000, VIP, 80, "S");
    frag[6] = 0x00;
    frag[7] = 0x10; // fragment offset 16
    assert_eq!(b.outbound(at(1), vni(), &mut frag), Outbound::Drop);
    for len in 0..40 {
        let mut cut = tcp("10.0.1.5", 1000, VIP, 80, "S");
        cut.truncate(len);
        let _ = b.outbound(at(1), vni(), &mut cut);
        let _ = b.inbound(at(1), vni(), &mut cut);
    }
}

#[test]
fn a_client_is_never_its_own_backend() {
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::Maglev,
        Algorithm::TwoChoices,
    ] {
        let mut b = balancer(algorithm, &["10.0.0.10", "10.0.0.11", "10.0.0.12"]);
        for port in 0..300 {
            assert_ne!(
                open(&mut b, at(1), "10.0.0.11", 1000 + port),
                ip("10.0.0.11"),
                "{algorithm:?}"
            );
        }
        // Alone in its service, it is refused rather than sent its own packets.
        let mut alone = balancer(algorithm, &["10.0.0.11"]);
        let mut syn = tcp("10.0.0.11", 5000, VIP, 80, "S");
        assert_eq!(
            alone.outbound(at(1), vni(), &mut syn),
            Outbound::Answer(Answer::Reset),
            "{algorithm:?}"
        );
    }
}

#[test]
fn a_new_syn_on_the_port_of_a_removed_backends_flow_gets_a_new_backend() {
    let mut b = balancer(Algorithm::RoundRobin, &["10.0.0.10", "10.0.0.11"]);
    let gone = open(&mut b, at(1), "10.0.1.5", 1000);
    let stays = if gone == ip("10.0.0.10") {
        "10.0.0.11"
    } else {
        "10.0.0.10"
    };
    b.set_service(&spec(Algorithm::RoundRobin, &[stays]));
    // The client reuses its port for a new connection: served, not refused.
    assert_eq!(open(&mut b, at(2), "10.0.1.5", 1000), ip(stays));
    assert_eq!(b.counters().backend_gone, 0);
}
