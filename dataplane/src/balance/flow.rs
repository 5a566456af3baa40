//! The 5-tuple of an IPv4 packet, read in place: what the balancer keys flows on.

use std::net::Ipv4Addr;

use crate::types::Vni;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// TCP flags the conntrack follows.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// One direction of a flow on one network. For ICMP echo the "ports" are the echo id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub vni: Vni,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl FlowKey {
    /// The other direction of the same flow.
    pub fn reversed(self) -> FlowKey {
        FlowKey {
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
            ..self
        }
    }

    /// The key's bytes, for hashing (Maglev must hash a flow identically on every node).
    pub fn to_bytes(self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[..4].copy_from_slice(&self.vni.get().to_be_bytes());
        out[4] = self.proto;
        out[5..9].copy_from_slice(&self.src.octets());
        out[9..11].copy_from_slice(&self.sport.to_be_bytes());
        out[11..15].copy_from_slice(&self.dst.octets());
        out[15..17].copy_from_slice(&self.dport.to_be_bytes());
        out
    }
}

/// What kind of packet a flow packet is, as far as the balancer cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp {
        flags: u8,
        payload_len: usize,
        seq: u32,
        ack: u32,
    },
    Udp,
    EchoRequest,
    /// Other ICMP (errors, echo replies), fragments, other protocols: not balanced.
    Other,
}

/// A parsed IPv4 packet: its flow key and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub key: FlowKey,
    pub kind: Kind,
    /// Where the L4 header starts in the packet.
    pub l4: usize,
}

/// Reads the flow of the IPv4 packet `ip` (starting at the IPv4 header). `None` when it is
/// not a well-formed IPv4 packet. Non-first fragments and unknown protocols come back with
/// [`Kind::Other`] and zero ports.
pub fn parse(vni: Vni, ip: &[u8]) -> Option<Packet> {
    let first = *ip.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if ihl < 20 || total < ihl || ip.len() < total {
        return None;
    }
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    let l4 = &ip[ihl..total];
    let mut key = FlowKey {
        vni,
        proto,
        src,
        sport: 0,
        dst,
        dport: 0,
    };
    let port = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    let kind = match proto {
        _ if fragment_offset != 0 => Kind::Other,
        PROTO_TCP if l4.len() >= 20 => {
            key.sport = port(0)?;
            key.dport = port(2)?;
            let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
            let data_offset = usize::from(l4[12] >> 4) * 4;
            Kind::Tcp {
                flags: l4[13],
                payload_len: l4.len().saturating_sub(data_offset),
                seq: word(4),
                ack: word(8),
            }
        }
        PROTO_UDP if l4.len() >= 8 => {
            key.sport = port(0)?;
            key.dport = port(2)?;
            Kind::Udp
        }
        PROTO_ICMP if l4.len() >= 8 && l4[0] == 8 => {
            // Echo: the identifier plays both ports, so replies map back the same way.
            key.sport = port(4)?;
            key.dport = key.sport;
            Kind::EchoRequest
        }
        _ => Kind::Other,
    };
    Some(Packet { key, kind, l4: ihl })
}
