//! Tests of the wire views and rewrites. Packets are built and checksums verified with
//! etherparse, an implementation independent of ours.

use super::checksum::{
    RewriteError, clamp_mss, ones_complement_update, rewrite_ipv4_dst, rewrite_ipv4_src,
    rewrite_l4_dst_port, rewrite_l4_src_port,
};
use super::vxlan::{
    FLAG_I, FLAG_SEALED, Header, Packet, SEALED_HEADER_LEN, SealedHeader, TAG_LEN,
    VXLAN_HEADER_LEN, VxlanError, emit_plain, emit_sealed, parse, split_sealed,
};
use crate::types::{Epoch, SenderId, Vni};
use etherparse::{
    IcmpEchoHeader, Icmpv4Header, Icmpv4Type, IpFragOffset, IpNumber, Ipv4Header, TcpHeader,
    TcpOptionElement, UdpHeader,
};
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn vni(raw: u32) -> Vni {
    Vni::new(raw).unwrap()
}

// ---------------------------------------------------------------------------------------
// VXLAN
// ---------------------------------------------------------------------------------------

fn plain_datagram(v: Vni, payload_len: usize) -> Vec<u8> {
    let mut h = [0u8; VXLAN_HEADER_LEN];
    emit_plain(v, &mut h);
    let mut d = h.to_vec();
    d.extend((0..payload_len).map(|i| i as u8));
    d
}

fn sealed_datagram(h: &SealedHeader, ciphertext_len: usize) -> Vec<u8> {
    let mut hb = [0u8; SEALED_HEADER_LEN];
    emit_sealed(h, &mut hb);
    let mut d = hb.to_vec();
    d.extend((0..ciphertext_len + TAG_LEN).map(|i| i as u8));
    d
}

fn sample_sealed() -> SealedHeader {
    SealedHeader {
        vni: vni(0x12_3456),
        epoch: Epoch(0x0102_0304),
        sender: SenderId(0xa0b0_c0d0),
        counter: 0x1122_3344_5566_7788,
    }
}

#[test]
fn plain_header_is_rfc7348_bytes() {
    let mut h = [0xffu8; 8];
    emit_plain(vni(0x12_3456), &mut h);
    // What a Linux vxlan device sends: flags 0x08, reserved zero, VNI, reserved zero.
    assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
}

#[test]
fn sealed_header_layout() {
    let mut h = [0xffu8; 24];
    emit_sealed(&sample_sealed(), &mut h);
    assert_eq!(
        h,
        [
            0x48, 0, 0, 0, 0x12, 0x34, 0x56, 0, // plain part, flags I|SEALED
            1, 2, 3, 4, // epoch
            0xa0, 0xb0, 0xc0, 0xd0, // sender
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // counter
        ]
    );
}

#[test]
fn plain_round_trip_at_the_edges() {
    for raw in [0, 1, 4096, 0xff_ff00, Vni::MAX] {
        let d = plain_datagram(vni(raw), 14);
        assert_eq!(
            parse(&d),
            Ok((Header::Plain { vni: vni(raw) }, VXLAN_HEADER_LEN))
        );
    }
}

#[test]
fn sealed_round_trip() {
    let h = sample_sealed();
    let d = sealed_datagram(&h, 0);
    assert_eq!(parse(&d), Ok((Header::Sealed(h), SEALED_HEADER_LEN)));
}

#[test]
fn too_short_is_truncated() {
    let d = plain_datagram(vni(7), 14);
    for len in 0..d.len() {
        assert_eq!(parse(&d[..len]), Err(VxlanError::Truncated), "len {len}");
    }
    let d = sealed_datagram(&sample_sealed(), 0);
    for len in 0..d.len() {
        assert_eq!(parse(&d[..len]), Err(VxlanError::Truncated), "len {len}");
    }
}

#[test]
fn missing_i_flag_is_rejected() {
    let mut d = plain_datagram(vni(7), 14);
    d[0] = 0;
    assert_eq!(parse(&d), Err(VxlanError::NoVniFlag));
    d[0] = FLAG_SEALED;
    assert_eq!(parse(&d), Err(VxlanError::NoVniFlag));
}

#[test]
fn every_unknown_flag_bit_is_rejected() {
    let mut d = sealed_datagram(&sample_sealed(), 14);
    for bit in (0..8)
        .map(|b| 1u8 << b)
        .filter(|&b| b != FLAG_I && b != FLAG_SEALED)
    {
        d[0] = FLAG_I | bit;
        assert_eq!(parse(&d), Err(VxlanError::UnknownFlags(FLAG_I | bit)));
        d[0] = FLAG_I | FLAG_SEALED | bit;
        assert_eq!(
            parse(&d),
            Err(VxlanError::UnknownFlags(FLAG_I | FLAG_SEALED | bit))
        );
    }
}

#[test]
fn reserved_fields_are_ignored_on_receipt() {
    let mut d = plain_datagram(vni(99), 14);
    d[1..4].copy_from_slice(&[0xff; 3]);
    d[7] = 0xff;
    assert_eq!(
        parse(&d),
        Ok((Header::Plain { vni: vni(99) }, VXLAN_HEADER_LEN))
    );
}

#[test]
fn checked_view_accessors() {
    let h = sample_sealed();
    let d = sealed_datagram(&h, 20);
    let p = Packet::new_checked(&d[..]).unwrap();
    assert!(p.is_sealed());
    assert_eq!(p.header(), Header::Sealed(h));
    assert_eq!(p.header_bytes(), &d[..24]);
    assert_eq!(p.sealed_header_bytes().map(|b| &b[..]), Some(&d[..24]));
    assert_eq!(p.payload(), &d[24..44]);
    assert_eq!(p.tag().map(|t| &t[..]), Some(&d[44..]));

    let d = plain_datagram(vni(5), 30);
    let p = Packet::new_checked(&d[..]).unwrap();
    assert!(!p.is_sealed());
    assert_eq!(p.vni(), vni(5));
    assert_eq!(p.payload(), &d[8..]);
    assert_eq!(p.tag(), None);
    assert_eq!(p.sealed_header_bytes(), None);
}

#[test]
fn split_sealed_shapes_the_buffer() {
    let mut d = vec![0u8; 24 + 5 + 16];
    let (h, payload, tag) = split_sealed(&mut d).unwrap();
    assert_eq!((h.len(), payload.len(), tag.len()), (24, 5, 16));
    assert_eq!(split_sealed(&mut [0u8; 39]), Err(VxlanError::Truncated));
    assert!(split_sealed(&mut [0u8; 40]).is_ok());
}

#[test]
fn overheads_match_the_design() {
    use super::vxlan::{PLAIN_OVERHEAD, SEALED_OVERHEAD};
    assert_eq!((PLAIN_OVERHEAD, SEALED_OVERHEAD), (50, 82));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_plain_round_trip(raw in 0..=Vni::MAX, extra in 0usize..64) {
        let d = plain_datagram(vni(raw), 14 + extra);
        prop_assert_eq!(parse(&d), Ok((Header::Plain { vni: vni(raw) }, VXLAN_HEADER_LEN)));
    }

    #[test]
    fn prop_sealed_round_trip(
        raw in 0..=Vni::MAX, epoch: u32, sender: u32, counter: u64, len in 0usize..64,
    ) {
        let h = SealedHeader { vni: vni(raw), epoch: Epoch(epoch), sender: SenderId(sender), counter };
        let d = sealed_datagram(&h, len);
        prop_assert_eq!(parse(&d), Ok((Header::Sealed(h), SEALED_HEADER_LEN)));
    }
}

// ---------------------------------------------------------------------------------------
// Checksums and rewrites
// ---------------------------------------------------------------------------------------

fn ip_header(protocol: IpNumber, src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Ipv4Header {
    let mut ip = Ipv4Header::new(payload_len as u16, 64, protocol, src, dst).unwrap();
    ip.identification = 0x1234;
    ip.header_checksum = ip.calc_header_checksum();
    ip
}

fn tcp_packet(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    raw_options: &[u8],
    syn: bool,
    ack: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = TcpHeader::new(ports.0, ports.1, 0xdead_beef, 64240);
    tcp.syn = syn;
    tcp.ack = ack;
    tcp.set_options_raw(raw_options).unwrap();
    let ip = ip_header(IpNumber::TCP, src, dst, tcp.header_len() + payload.len());
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
    let mut out = Vec::new();
    ip.write(&mut out).unwrap();
    tcp.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

fn udp_packet(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let ip = ip_header(IpNumber::UDP, src, dst, UdpHeader::LEN + payload.len());
    let udp = UdpHeader::with_ipv4_checksum(ports.0, ports.1, &ip, payload).unwrap();
    let mut out = Vec::new();
    ip.write(&mut out).unwrap();
    udp.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

fn icmp_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let echo = Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 9 });
    let icmp = Icmpv4Header::with_checksum(echo, payload);
    let ip = ip_header(IpNumber::ICMP, src, dst, icmp.header_len() + payload.len());
    let mut out = Vec::new();
    ip.write(&mut out).unwrap();
    icmp.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// A non-first fragment: IPv4 header with offset 185 (×8 bytes) and opaque payload.
fn fragment(protocol: IpNumber, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4Header::new(payload.len() as u16, 64, protocol, src, dst).unwrap();
    ip.dont_fragment = false;
    ip.fragment_offset = IpFragOffset::try_new(185).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = Vec::new();
    ip.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// Asserts that every checksum in `p` equals etherparse's full recomputation.
fn assert_checksums(p: &[u8]) {
    let (ip, _) = Ipv4Header::from_slice(p).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 checksum"
    );
    if ip.fragment_offset.value() != 0 {
        return;
    }
    let l4 = &p[ip.header_len()..usize::from(ip.total_len)];
    match ip.protocol {
        IpNumber::TCP => {
            let (tcp, data) = TcpHeader::from_slice(l4).unwrap();
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(&ip, data).unwrap(),
                "TCP checksum"
            );
        }
        IpNumber::UDP => {
            let (udp, data) = UdpHeader::from_slice(l4).unwrap();
            if udp.checksum != 0 {
                let full = udp
                    .calc_checksum_ipv4(&ip, &data[..udp.length as usize - 8])
                    .unwrap();
                assert_eq!(udp.checksum, full, "UDP checksum");
            }
        }
        IpNumber::ICMP => {
            let (icmp, data) = Icmpv4Header::from_slice(l4).unwrap();
            let mut full = icmp.clone();
            full.update_checksum(data);
            assert_eq!(icmp.checksum, full.checksum, "ICMP checksum");
        }
        _ => {}
    }
}

const A: [u8; 4] = [10, 0, 1, 2];
const B: [u8; 4] = [10, 0, 9, 200];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

#[test]
fn ones_complement_update_matches_rfc1624_example() {
    // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
    assert_eq!(
        ones_complement_update(0xdd2f, &[0x55, 0x55], &[0x32, 0x85]),
        0x0000
    );
    // No change, no checksum change.
    assert_eq!(
        ones_complement_update(0x1234, &[1, 2, 3, 4], &[1, 2, 3, 4]),
        0x1234
    );
}

#[test]
fn rewrite_addresses_of_tcp_udp_icmp() {
    let payload = b"hello, overlay";
    for mut p in [
        tcp_packet(A, B, (40000, 80), &[], false, true, payload),
        udp_packet(A, B, (40000, 53), payload),
        icmp_packet(A, B, payload),
    ] {
        let l4_before = p[24..].to_vec();
        rewrite_ipv4_dst(&mut p, VIP).unwrap();
        assert_checksums(&p);
        rewrite_ipv4_src(&mut p, Ipv4Addr::new(192, 168, 77, 1)).unwrap();
        assert_checksums(&p);
        let (ip, _) = Ipv4Header::from_slice(&p).unwrap();
        assert_eq!(
            (ip.source, ip.destination),
            ([192, 168, 77, 1], VIP.octets())
        );
        if ip.protocol == IpNumber::ICMP {
            assert_eq!(
                p[24..],
                l4_before[..],
                "ICMP has no pseudo header: untouched"
            );
        }
    }
}

#[test]
fn rewrite_ports_of_tcp_and_udp() {
    for mut p in [
        tcp_packet(A, B, (40000, 80), &[], true, false, b"x"),
        udp_packet(A, B, (40000, 53), b"odd"),
    ] {
        rewrite_l4_dst_port(&mut p, 8080).unwrap();
        rewrite_l4_src_port(&mut p, 1).unwrap();
        assert_checksums(&p);
        assert_eq!(&p[20..24], &[0, 1, 0x1f, 0x90]);
    }
}

#[test]
fn udp_without_checksum_stays_without() {
    let mut p = udp_packet(A, B, (1, 2), b"data");
    p[26..28].copy_from_slice(&[0, 0]);
    rewrite_ipv4_src(&mut p, VIP).unwrap();
    rewrite_l4_dst_port(&mut p, 99).unwrap();
    assert_eq!(&p[26..28], &[0, 0]);
    assert_checksums(&p);
}

#[test]
fn every_udp_port_matches_full_recompute_including_the_0xffff_case() {
    // Across all 65536 values one gives a computed sum of 0, which UDP must send as 0xffff.
    let base = udp_packet(A, B, (40000, 53), b"ping");
    let mut saw_ffff = false;
    for port in 0..=u16::MAX {
        let mut p = base.clone();
        rewrite_l4_src_port(&mut p, port).unwrap();
        assert_checksums(&p);
        saw_ffff |= p[26..28] == [0xff, 0xff];
    }
    assert!(saw_ffff);
}

#[test]
fn every_tcp_port_matches_full_recompute() {
    let base = tcp_packet(A, B, (40000, 80), &[], false, true, b"pong");
    for port in 0..=u16::MAX {
        let mut p = base.clone();
        rewrite_l4_dst_port(&mut p, port).unwrap();
        assert_checksums(&p);
    }
}

#[test]
fn non_first_fragment_only_changes_the_ip_checksum() {
    let body = [0xabu8; 64];
    for proto in [IpNumber::TCP, IpNumber::UDP, IpNumber::ICMP] {
        let mut p = fragment(proto, A, B, &body);
        rewrite_ipv4_dst(&mut p, VIP).unwrap();
        rewrite_ipv4_src(&mut p, VIP).unwrap();
        assert_checksums(&p);
        assert_eq!(
            p[20..],
            body[..],
            "payload of a non-first fragment is untouched"
        );
        let before = p.clone();
        let expected = if proto == IpNumber::ICMP {
            RewriteError::NotTcpOrUdp
        } else {
            RewriteError::NoL4Header
        };
        assert_eq!(rewrite_l4_src_port(&mut p, 1), Err(expected));
        assert_eq!(p, before);
    }
}

#[test]
fn first_fragment_gets_the_whole_datagrams_checksum() {
    let payload = [0x5au8; 200];
    let whole = tcp_packet(A, B, (40000, 80), &[], false, true, &payload);
    let expected = tcp_packet(A, VIP.octets(), (40000, 80), &[], false, true, &payload);
    // First fragment: the IP header says 20 + 20 + 96 bytes with More Fragments set.
    let (mut ip, _) = Ipv4Header::from_slice(&whole).unwrap();
    ip.dont_fragment = false;
    ip.more_fragments = true;
    ip.total_len = 20 + 20 + 96;
    ip.header_checksum = ip.calc_header_checksum();
    let mut frag = Vec::new();
    ip.write(&mut frag).unwrap();
    frag.extend_from_slice(&whole[20..136]);

    rewrite_ipv4_dst(&mut frag, VIP).unwrap();
    let (ip, _) = Ipv4Header::from_slice(&frag).unwrap();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(
        frag[36..38],
        expected[36..38],
        "TCP checksum of the reassembled datagram"
    );
}

#[test]
fn link_padding_after_total_length_is_ignored() {
    let mut p = udp_packet(A, B, (1, 2), b"");
    p.extend_from_slice(&[0xee; 18]); // Ethernet pads to 60 bytes.
    rewrite_ipv4_src(&mut p, VIP).unwrap();
    rewrite_l4_src_port(&mut p, 7).unwrap();
    assert_checksums(&p);
    assert_eq!(p[28..], [0xee; 18]);
}

#[test]
fn malformed_input_is_refused_and_left_unchanged() {
    let good = tcp_packet(A, B, (1, 2), &[], false, true, b"abc");
    // Every truncation.
    for len in 0..good.len() {
        let mut p = good[..len].to_vec();
        let before = p.clone();
        assert!(rewrite_ipv4_src(&mut p, VIP).is_err(), "len {len}");
        assert!(rewrite_ipv4_dst(&mut p, VIP).is_err(), "len {len}");
        assert!(rewrite_l4_src_port(&mut p, 9).is_err(), "len {len}");
        assert!(rewrite_l4_dst_port(&mut p, 9).is_err(), "len {len}");
        assert!(!clamp_mss(&mut p, 536));
        assert_eq!(p, before);
    }
    let mut p = good.clone();
    p[0] = 0x65; // IPv6 version nibble.
    assert_eq!(rewrite_ipv4_src(&mut p, VIP), Err(RewriteError::NotIpv4));
    let mut p = good.clone();
    p[0] = 0x44; // IHL 4 words.
    assert_eq!(rewrite_ipv4_src(&mut p, VIP), Err(RewriteError::BadHeader));
    let mut p = good.clone();
    p[2..4].copy_from_slice(&16u16.to_be_bytes()); // total length below header length.
    assert_eq!(rewrite_ipv4_src(&mut p, VIP), Err(RewriteError::BadHeader));
    let mut p = good.clone();
    p[2..4].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(rewrite_l4_dst_port(&mut p, 5), Err(RewriteError::Truncated));
    let mut p = icmp_packet(A, B, b"");
    assert_eq!(
        rewrite_l4_dst_port(&mut p, 5),
        Err(RewriteError::NotTcpOrUdp)
    );
    // A first fragment too short to hold the TCP checksum.
    let mut p = fragment(IpNumber::TCP, A, B, &[0; 10]);
    p[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF, offset 0.
    p[10..12].copy_from_slice(&[0, 0]);
    let (ip, _) = Ipv4Header::from_slice(&p).unwrap();
    p[10..12].copy_from_slice(&ip.calc_header_checksum().to_be_bytes());
    let before = p.clone();
    assert_eq!(rewrite_ipv4_src(&mut p, VIP), Err(RewriteError::Truncated));
    assert_eq!(p, before);
}

// ---- MSS clamping ----

const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];

fn mss_of(p: &[u8]) -> Option<u16> {
    let (_, l4) = Ipv4Header::from_slice(p).unwrap();
    let (tcp, _) = TcpHeader::from_slice(l4).unwrap();
    tcp.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })
}

#[test]
fn clamps_syn_and_syn_ack() {
    // Linux's SYN options: MSS, SACK permitted, timestamps, NOP, window scale.
    let linux = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    for ack in [false, true] {
        let mut p = tcp_packet(A, B, (40000, 80), &linux, true, ack, b"");
        assert!(clamp_mss(&mut p, 1368));
        assert_eq!(mss_of(&p), Some(1368));
        assert_checksums(&p);
        assert!(!clamp_mss(&mut p, 1368), "already clamped");
    }
}

#[test]
fn clamps_mss_at_an_odd_offset() {
    let opts = [1, 2, 4, 0x05, 0xb4, 1, 1, 0];
    let mut p = tcp_packet(A, B, (40000, 80), &opts, true, false, b"");
    assert!(clamp_mss(&mut p, 1000));
    assert_eq!(mss_of(&p), Some(1000));
    assert_checksums(&p);
}

#[test]
fn leaves_alone_what_it_must_not_clamp() {
    let cases: [(&[u8], bool, &str); 7] = [
        (&MSS_1460, false, "not a SYN"),
        (&[2, 4, 0x01, 0x00], true, "MSS already small"),
        (&[0, 0, 0, 0, 2, 4, 0x05, 0xb4], true, "after EOL"),
        (&[8, 0, 0, 0, 2, 4, 0x05, 0xb4], true, "option length 0"),
        (&[8, 1, 0, 0, 2, 4, 0x05, 0xb4], true, "option length 1"),
        (
            &[1, 1, 8, 9, 2, 4, 0x05, 0xb4],
            true,
            "option runs past the header",
        ),
        (
            &[2, 6, 0x05, 0xb4, 0, 0, 0, 0],
            true,
            "MSS with the wrong length",
        ),
    ];
    for (opts, syn, why) in cases {
        let mut p = tcp_packet(A, B, (1, 2), opts, syn, false, b"");
        let before = p.clone();
        assert!(!clamp_mss(&mut p, 536), "{why}");
        assert_eq!(p, before, "{why}");
    }
    let mut p = udp_packet(A, B, (1, 2), &MSS_1460);
    assert!(!clamp_mss(&mut p, 536), "UDP");
    let mut p = fragment(IpNumber::TCP, A, B, &[0x02; 40]);
    assert!(!clamp_mss(&mut p, 536), "non-first fragment");
}

fn addr() -> impl Strategy<Value = [u8; 4]> {
    any::<[u8; 4]>()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn prop_rewrites_equal_full_recompute(
        src in addr(), dst in addr(), new_src in addr(), new_dst in addr(),
        sport: u16, dport: u16, new_sport: u16, new_dport: u16,
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        kind in 0u8..3,
    ) {
        let mut p = match kind {
            0 => tcp_packet(src, dst, (sport, dport), &[], false, true, &payload),
            1 => udp_packet(src, dst, (sport, dport), &payload),
            _ => icmp_packet(src, dst, &payload),
        };
        rewrite_ipv4_src(&mut p, Ipv4Addr::from(new_src)).unwrap();
        rewrite_ipv4_dst(&mut p, Ipv4Addr::from(new_dst)).unwrap();
        if kind < 2 {
            rewrite_l4_src_port(&mut p, new_sport).unwrap();
            rewrite_l4_dst_port(&mut p, new_dport).unwrap();
            prop_assert_eq!(&p[20..24], &[new_sport.to_be_bytes(), new_dport.to_be_bytes()].concat()[..]);
        }
        assert_checksums(&p);
        prop_assert_eq!(&p[12..20], &[new_src, new_dst].concat()[..]);
    }

    #[test]
    fn prop_clamp_keeps_checksum_valid(
        opts in proptest::collection::vec(any::<u8>(), 0..10).prop_map(|mut v| {
            v.resize(v.len().div_ceil(4) * 4, 1);
            v
        }),
        mss: u16, lead_nops in 0usize..4, max_mss: u16, syn: bool,
    ) {
        let mut raw = vec![1u8; lead_nops];
        raw.extend_from_slice(&[2, 4]);
        raw.extend_from_slice(&mss.to_be_bytes());
        raw.extend_from_slice(&opts);
        raw.resize(raw.len().div_ceil(4) * 4, 0);
        let mut p = tcp_packet(A, B, (1, 2), &raw, syn, false, b"data");
        let changed = clamp_mss(&mut p, max_mss);
        // The random tail may hold more MSS options; the first one is ours.
        if !syn {
            prop_assert!(!changed);
        } else {
            prop_assert_eq!(mss_of(&p), Some(mss.min(max_mss)));
            prop_assert!(changed || mss <= max_mss);
        }
        assert_checksums(&p);
    }
}
