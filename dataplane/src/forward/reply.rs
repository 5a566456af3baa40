//! Frames the core writes back to an endpoint itself: ARP replies from the tables, and ICMP
//! errors that make a refused connect fail at once instead of timing out.

use crate::types::Mac;
use std::net::Ipv4Addr;

pub(crate) const ETH_LEN: usize = 14;
const ARP_LEN: usize = 28;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// An ARP request from a local endpoint, validated: Ethernet hardware, IPv4 protocol,
/// operation 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArpRequest {
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Parses the ARP payload of a frame (`arp` starts after the Ethernet header).
pub(crate) fn parse_arp_request(arp: &[u8]) -> Option<ArpRequest> {
    let slice = etherparse::ArpPacketSlice::from_slice(arp).ok()?;
    let is_eth_ipv4 = slice.hw_addr_type() == etherparse::ArpHardwareId::ETHERNET
        && slice.proto_addr_type() == etherparse::EtherType::IPV4
        && slice.hw_addr_size() == 6
        && slice.proto_addr_size() == 4;
    if !is_eth_ipv4 || slice.operation() != etherparse::ArpOperation::REQUEST {
        return None;
    }
    Some(ArpRequest {
        sender_mac: slice.sender_hw_addr().try_into().ok()?,
        sender_ip: ipv4(slice.sender_protocol_addr())?,
        target_ip: ipv4(slice.target_protocol_addr())?,
    })
}

fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = bytes.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// Writes the reply to `req` into `frame` (at least 42 bytes, the request's own frame),
/// saying `target_ip` is at `target_mac`. Returns the reply's length.
pub(crate) fn write_arp_reply(
    frame: &mut [u8],
    req: &ArpRequest,
    target_mac: Mac,
) -> Option<usize> {
    let out = frame.get_mut(..ETH_LEN + ARP_LEN)?;
    out[0..6].copy_from_slice(&req.sender_mac);
    out[6..12].copy_from_slice(&target_mac.0);
    out[12..14].copy_from_slice(&[0x08, 0x06]);
    let arp = &mut out[ETH_LEN..];
    arp[0..2].copy_from_slice(&[0x00, 0x01]); // Ethernet
    arp[2..4].copy_from_slice(&ETHERTYPE_IPV4);
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&[0x00, 0x02]); // reply
    arp[8..14].copy_from_slice(&target_mac.0);
    arp[14..18].copy_from_slice(&req.target_ip.octets());
    arp[18..24].copy_from_slice(&req.sender_mac);
    arp[24..28].copy_from_slice(&req.sender_ip.octets());
    Some(ETH_LEN + ARP_LEN)
}

/// ICMP destination-unreachable codes we send (RFC 792, RFC 1812).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// Code 1: nothing routes there.
    Host = 1,
    /// Code 3: nothing listens there (a VIP with no backend, for UDP).
    Port = 3,
    /// Code 13: administratively prohibited (another network: isolation).
    Prohibited = 13,
}

/// Replaces the IPv4 frame in `frame[..len]` with an ICMP destination-unreachable error to
/// its sender, from `from_ip`/`from_mac` (the network's gateway). The error quotes the
/// original IP header and the first 8 bytes of its payload, as RFC 792 asks, so the sender's
/// kernel can match it to the socket and fail the connect. Returns the new frame's length.
pub(crate) fn write_icmp_unreachable(
    frame: &mut [u8],
    len: usize,
    code: Unreachable,
    from_ip: Ipv4Addr,
    from_mac: Mac,
) -> Option<usize> {
    let original = frame.get(ETH_LEN..len)?;
    let ip = etherparse::Ipv4HeaderSlice::from_slice(original).ok()?;
    // Never answer an ICMP error with an ICMP error (RFC 1122 3.2.2); a plain echo is fine.
    if ip.protocol() == etherparse::IpNumber::ICMP {
        let icmp_type = original.get(ip.slice().len()).copied()?;
        if !matches!(icmp_type, 0 | 8) {
            return None;
        }
    }
    let quoted_len = (ip.slice().len() + 8).min(original.len());
    let mut quote = [0u8; 60 + 8];
    quote[..quoted_len].copy_from_slice(&original[..quoted_len]);
    let client_mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let client_ip = ip.source_addr();

    let builder = etherparse::PacketBuilder::ethernet2(from_mac.0, client_mac)
        .ipv4(from_ip.octets(), client_ip.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(match code {
            Unreachable::Host => etherparse::icmpv4::DestUnreachableHeader::Host,
            Unreachable::Port => etherparse::icmpv4::DestUnreachableHeader::Port,
            Unreachable::Prohibited => etherparse::icmpv4::DestUnreachableHeader::FilterProhibited,
        }));
    let out_len = builder.size(quoted_len);
    let mut out = frame.get_mut(..out_len)?;
    builder.write(&mut out, &quote[..quoted_len]).ok()?;
    Some(out_len)
}

/// Replaces the TCP segment in `frame[..len]` with the reset RFC 793 prescribes for a segment
/// that reaches no connection, sent back from its destination (the VIP) with `from_mac`: with
/// ACK set, `SEQ = SEG.ACK`; otherwise `SEQ = 0, ACK = SEG.SEQ + SEG.LEN`. A reset is never
/// answered. Returns the new frame's length.
pub(crate) fn write_tcp_reset(frame: &mut [u8], len: usize, from_mac: Mac) -> Option<usize> {
    let original = frame.get(ETH_LEN..len)?;
    let ip = etherparse::Ipv4HeaderSlice::from_slice(original).ok()?;
    let tcp = etherparse::TcpHeaderSlice::from_slice(original.get(ip.slice().len()..)?).ok()?;
    if tcp.rst() {
        return None;
    }
    let payload = usize::from(ip.total_len()).checked_sub(ip.slice().len() + tcp.slice().len())?;
    let seg_len = u32::try_from(payload).ok()? + u32::from(tcp.syn()) + u32::from(tcp.fin());
    let client_mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let (from_ip, client_ip) = (ip.destination(), ip.source());
    let (seq, ack) = if tcp.ack() {
        (tcp.acknowledgment_number(), None)
    } else {
        (0, Some(tcp.sequence_number().wrapping_add(seg_len)))
    };
    let builder = etherparse::PacketBuilder::ethernet2(from_mac.0, client_mac)
        .ipv4(from_ip, client_ip, 64)
        .tcp(tcp.destination_port(), tcp.source_port(), seq, 0)
        .rst();
    let builder = match ack {
        Some(ack) => builder.ack(ack),
        None => builder,
    };
    let out_len = builder.size(0);
    let mut out = frame.get_mut(..out_len)?;
    builder.write(&mut out, &[]).ok()?;
    Some(out_len)
}

/// Turns the ICMP echo request in `frame[..len]` into its reply, in place, from the address
/// it was sent to (a VIP) and `from_mac`. Returns the frame's length.
pub(crate) fn write_echo_reply(frame: &mut [u8], len: usize, from_mac: Mac) -> Option<usize> {
    let ihl = usize::from(frame.get(ETH_LEN)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([
        *frame.get(ETH_LEN + 2)?,
        *frame.get(ETH_LEN + 3)?,
    ]));
    let icmp_end = ETH_LEN + total;
    if icmp_end > len || total < ihl + 8 {
        return None;
    }
    let client_mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    frame.get_mut(0..6)?.copy_from_slice(&client_mac);
    frame.get_mut(6..12)?.copy_from_slice(&from_mac.0);
    // Swapping source and destination leaves the IPv4 header checksum as it was.
    let ip = frame.get_mut(ETH_LEN..ETH_LEN + ihl)?;
    let (src, dst): ([u8; 4], [u8; 4]) = (ip[12..16].try_into().ok()?, ip[16..20].try_into().ok()?);
    ip[12..16].copy_from_slice(&dst);
    ip[16..20].copy_from_slice(&src);
    let icmp = frame.get_mut(ETH_LEN + ihl..icmp_end)?;
    icmp[0] = 0; // echo reply
    icmp[2..4].copy_from_slice(&[0, 0]);
    let checksum = crate::wire::checksum::finish(crate::wire::checksum::sum(0, icmp));
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    Some(icmp_end)
}
