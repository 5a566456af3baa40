//! Hand-built Ethernet frames for tests that talk to a TAP directly.

use dataplane::types::Mac;
use std::net::Ipv4Addr;

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST: Mac = Mac([0xff; 6]);

/// An ARP packet (Ethernet/IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

/// The frame's destination, source and EtherType; `None` when shorter than 14 bytes.
pub fn ethernet(frame: &[u8]) -> Option<(Mac, Mac, u16)> {
    let h = frame.get(..14)?;
    let mac = |b: &[u8]| Mac([b[0], b[1], b[2], b[3], b[4], b[5]]);
    Some((
        mac(&h[0..6]),
        mac(&h[6..12]),
        u16::from_be_bytes([h[12], h[13]]),
    ))
}

/// An Ethernet frame carrying `arp`, from `src` to `dst`.
pub fn arp_frame(dst: Mac, src: Mac, arp: &Arp) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]); // Ethernet, IPv4, hlen 6, plen 4
    f.extend_from_slice(&arp.op.to_be_bytes());
    f.extend_from_slice(&arp.sender_mac.0);
    f.extend_from_slice(&arp.sender_ip.octets());
    f.extend_from_slice(&arp.target_mac.0);
    f.extend_from_slice(&arp.target_ip.octets());
    f
}

/// A broadcast ARP request: who has `target_ip`? tell `sender_ip` at `sender_mac`.
pub fn arp_request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let arp = Arp {
        op: 1,
        sender_mac,
        sender_ip,
        target_mac: Mac([0; 6]),
        target_ip,
    };
    arp_frame(BROADCAST, sender_mac, &arp)
}

/// The ARP packet in an Ethernet frame, if it is one (Ethernet/IPv4).
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let (_, _, ethertype) = ethernet(frame)?;
    let p = frame.get(14..42)?;
    if ethertype != ETHERTYPE_ARP || p[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let mac = |b: &[u8]| Mac([b[0], b[1], b[2], b[3], b[4], b[5]]);
    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    Some(Arp {
        op: u16::from_be_bytes([p[6], p[7]]),
        sender_mac: mac(&p[8..14]),
        sender_ip: ip(&p[14..18]),
        target_mac: mac(&p[18..24]),
        target_ip: ip(&p[24..28]),
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn arp_roundtrip() {
        let m = Mac([2, 0x42, 10, 0, 0, 1]);
        let f = arp_request(m, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(f.len(), 42);
        assert_eq!(ethernet(&f), Some((BROADCAST, m, ETHERTYPE_ARP)));
        let a = parse_arp(&f).unwrap();
        assert_eq!(
            (a.op, a.sender_mac, a.target_ip),
            (1, m, Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(parse_arp(&f[..41]), None);
    }
}
