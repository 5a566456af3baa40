//! In-place IPv4 header rewrites with incremental checksum updates (RFC 1624), for the NAT of
//! the VIP balancer and for MSS clamping.
//!
//! Every function takes the packet starting at its IPv4 header (after the Ethernet header),
//! validates everything it is going to touch before writing a byte, and never panics: on an
//! error the packet is unchanged.
//!
//! Which checksums an address change touches: the IPv4 header checksum always; the TCP and UDP
//! checksums too, because their pseudo header holds both addresses (a UDP checksum of 0 means
//! "none" and stays 0); ICMP has no pseudo header. A non-first fragment carries no L4 header,
//! so only its IPv4 checksum changes; the first fragment holds the L4 checksum of the whole
//! datagram, and an incremental update is exactly right for it. Embedded headers in ICMP
//! errors are not rewritten here.

use std::net::Ipv4Addr;
use thiserror::Error;

/// Byte offsets in the IPv4 header (RFC 791).
mod ipv4 {
    use core::ops::Range;

    pub const MIN_LEN: usize = 20;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const FRAG: Range<usize> = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    /// The fragment offset bits of the FRAG field (the top 3 bits are flags).
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;

    pub const PROTO_TCP: u8 = 6;
    pub const PROTO_UDP: u8 = 17;
}

/// Byte offsets in TCP (RFC 9293) and UDP (RFC 768) headers, from the start of the segment.
mod l4 {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const TCP_CHECKSUM: Range<usize> = 16..18;
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
    pub const TCP_DATA_OFFSET: usize = 12;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_MIN_LEN: usize = 20;

    pub const OPT_EOL: u8 = 0;
    pub const OPT_NOP: u8 = 1;
    pub const OPT_MSS: u8 = 2;
    pub const OPT_MSS_LEN: usize = 4;
}

/// Why a rewrite was refused. In every case the packet is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RewriteError {
    /// The buffer ends before the IPv4 header, before the IPv4 total length, or before the
    /// L4 fields the rewrite must touch (ports, checksum). The packet is unchanged.
    #[error("packet truncated")]
    Truncated,
    /// The version field is not 4. The packet is unchanged.
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// IHL below 5 words, or total length below the header length. The packet is unchanged.
    #[error("malformed IPv4 header")]
    BadHeader,
    /// A port rewrite on a protocol other than TCP or UDP. The packet is unchanged.
    #[error("not a TCP or UDP packet")]
    NotTcpOrUdp,
    /// A port rewrite on a non-first fragment, which carries no L4 header. The packet is
    /// unchanged.
    #[error("non-first fragment has no L4 header")]
    NoL4Header,
}

/// Updates a 16-bit one's complement checksum for `old` bytes replaced by `new` bytes, by
/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`.
///
/// `old` and `new` are the same even length and start on a 16-bit boundary of the checksummed
/// data (an odd trailing byte is taken as the high byte of a zero-padded word, as the checksum
/// itself does).
pub fn ones_complement_update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u64::from(!checksum);
    sum += old.chunks(2).map(|w| u64::from(!word(w))).sum::<u64>();
    sum += new.chunks(2).map(|w| u64::from(word(w))).sum::<u64>();
    !fold(sum)
}

/// Rewrites the IPv4 source address, fixing the IPv4 and the TCP/UDP checksums.
pub fn rewrite_ipv4_src(packet: &mut [u8], new: Ipv4Addr) -> Result<(), RewriteError> {
    rewrite_ipv4_addr(packet, ipv4::SRC.start, new)
}

/// Rewrites the IPv4 destination address, fixing the IPv4 and the TCP/UDP checksums.
pub fn rewrite_ipv4_dst(packet: &mut [u8], new: Ipv4Addr) -> Result<(), RewriteError> {
    rewrite_ipv4_addr(packet, ipv4::DST.start, new)
}

/// Rewrites the TCP or UDP source port, fixing the L4 checksum.
pub fn rewrite_l4_src_port(packet: &mut [u8], new: u16) -> Result<(), RewriteError> {
    rewrite_l4_port(packet, l4::SRC_PORT.start, new)
}

/// Rewrites the TCP or UDP destination port, fixing the L4 checksum.
pub fn rewrite_l4_dst_port(packet: &mut [u8], new: u16) -> Result<(), RewriteError> {
    rewrite_l4_port(packet, l4::DST_PORT.start, new)
}

/// Lowers the MSS option of an IPv4 TCP SYN (or SYN-ACK) to `max_mss` when it is larger,
/// fixing the TCP checksum. Returns whether the packet changed; anything that is not such a
/// packet, or whose options are malformed, is left alone.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    let Ok(ip) = Ipv4Layout::parse(packet) else {
        return false;
    };
    if ip.protocol != ipv4::PROTO_TCP || !ip.first_fragment {
        return false;
    }
    let Some(tcp) = packet.get_mut(ip.header_len..ip.total_len) else {
        return false;
    };
    let (Some(&offset), Some(&flags)) = (tcp.get(l4::TCP_DATA_OFFSET), tcp.get(l4::TCP_FLAGS))
    else {
        return false;
    };
    let header_len = usize::from(offset >> 4) * 4;
    if flags & l4::TCP_SYN == 0 || header_len < l4::TCP_MIN_LEN || header_len > tcp.len() {
        return false;
    }

    let mut changed = false;
    let mut i = l4::TCP_MIN_LEN;
    while i < header_len {
        let kind = tcp.get(i).copied().unwrap_or(l4::OPT_EOL);
        if kind == l4::OPT_EOL {
            break;
        }
        if kind == l4::OPT_NOP {
            i += 1;
            continue;
        }
        // Every other option has a length byte that counts kind and length; a length that
        // is below 2 or runs past the header makes the rest unparseable: stop there.
        let len = match tcp.get(i + 1) {
            Some(&len) if i + 1 < header_len => usize::from(len),
            _ => break,
        };
        if len < 2 || i + len > header_len {
            break;
        }
        if kind == l4::OPT_MSS && len == l4::OPT_MSS_LEN {
            let at = i + 2;
            let mss = read_u16(tcp, at).unwrap_or(0);
            if mss > max_mss {
                // The MSS value may sit at an odd offset (after one NOP, say): `adjust`
                // handles the misalignment.
                let sum = read_u16(tcp, l4::TCP_CHECKSUM.start).unwrap_or(0);
                let sum = adjust(sum, tcp, at, &max_mss.to_be_bytes());
                write_u16(tcp, at, max_mss);
                write_u16(tcp, l4::TCP_CHECKSUM.start, sum);
                changed = true;
            }
        }
        i += len;
    }
    changed
}

/// What the rewrites need to know of an IPv4 packet, all validated against the buffer.
struct Ipv4Layout {
    header_len: usize,
    total_len: usize,
    protocol: u8,
    /// Fragment offset 0: the L4 header (if any) is in this packet.
    first_fragment: bool,
}

impl Ipv4Layout {
    fn parse(p: &[u8]) -> Result<Ipv4Layout, RewriteError> {
        let Some(&ver_ihl) = p.get(ipv4::VER_IHL) else {
            return Err(RewriteError::Truncated);
        };
        if ver_ihl >> 4 != 4 {
            return Err(RewriteError::NotIpv4);
        }
        if p.len() < ipv4::MIN_LEN {
            return Err(RewriteError::Truncated);
        }
        let header_len = usize::from(ver_ihl & 0x0f) * 4;
        if header_len < ipv4::MIN_LEN {
            return Err(RewriteError::BadHeader);
        }
        let total_len = usize::from(read_u16(p, ipv4::TOTAL_LEN.start).unwrap_or(0));
        if total_len < header_len {
            return Err(RewriteError::BadHeader);
        }
        // Trailing bytes past the total length are link-layer padding: allowed and ignored.
        if total_len > p.len() {
            return Err(RewriteError::Truncated);
        }
        let frag = read_u16(p, ipv4::FRAG.start).unwrap_or(0);
        Ok(Ipv4Layout {
            header_len,
            total_len,
            protocol: p.get(ipv4::PROTOCOL).copied().unwrap_or(0),
            first_fragment: frag & ipv4::FRAG_OFFSET_MASK == 0,
        })
    }

    /// Offset (in the packet) of the L4 checksum that covers the IPv4 addresses, if it is
    /// present and in use: TCP or UDP, first fragment, UDP checksum not 0.
    fn pseudo_header_checksum(&self, p: &[u8]) -> Result<Option<(usize, u8)>, RewriteError> {
        let Some(at) = l4_checksum_offset(self.protocol) else {
            return Ok(None);
        };
        if !self.first_fragment {
            return Ok(None);
        }
        let at = self.header_len + at;
        if at + 2 > self.total_len {
            return Err(RewriteError::Truncated);
        }
        if self.protocol == ipv4::PROTO_UDP && read_u16(p, at) == Some(0) {
            return Ok(None);
        }
        Ok(Some((at, self.protocol)))
    }
}

fn l4_checksum_offset(protocol: u8) -> Option<usize> {
    match protocol {
        ipv4::PROTO_TCP => Some(l4::TCP_CHECKSUM.start),
        ipv4::PROTO_UDP => Some(l4::UDP_CHECKSUM.start),
        _ => None,
    }
}

fn rewrite_ipv4_addr(packet: &mut [u8], at: usize, new: Ipv4Addr) -> Result<(), RewriteError> {
    let ip = Ipv4Layout::parse(packet)?;
    let l4_sum = ip.pseudo_header_checksum(packet)?;
    let new = new.octets();
    let Some(old) = packet.get(at..at + 4) else {
        return Err(RewriteError::Truncated);
    };
    let mut old_addr = [0u8; 4];
    old_addr.copy_from_slice(old);

    let sum = read_u16(packet, ipv4::CHECKSUM.start).unwrap_or(0);
    write_u16(
        packet,
        ipv4::CHECKSUM.start,
        ones_complement_update(sum, &old_addr, &new),
    );
    if let Some((sum_at, protocol)) = l4_sum {
        // The address is in the pseudo header, 16-bit aligned there too.
        let sum = read_u16(packet, sum_at).unwrap_or(0);
        let sum = l4_final(protocol, ones_complement_update(sum, &old_addr, &new));
        write_u16(packet, sum_at, sum);
    }
    if let Some(addr) = packet.get_mut(at..at + 4) {
        addr.copy_from_slice(&new);
    }
    Ok(())
}

fn rewrite_l4_port(packet: &mut [u8], at: usize, new: u16) -> Result<(), RewriteError> {
    let ip = Ipv4Layout::parse(packet)?;
    let Some(sum_offset) = l4_checksum_offset(ip.protocol) else {
        return Err(RewriteError::NotTcpOrUdp);
    };
    if !ip.first_fragment {
        return Err(RewriteError::NoL4Header);
    }
    let Some(seg) = packet.get_mut(ip.header_len..ip.total_len) else {
        return Err(RewriteError::Truncated);
    };
    // The checksum field lies after both ports in TCP and UDP: checking it covers them.
    let (Some(old), Some(sum)) = (read_u16(seg, at), read_u16(seg, sum_offset)) else {
        return Err(RewriteError::Truncated);
    };
    let in_use = !(ip.protocol == ipv4::PROTO_UDP && sum == 0);
    if in_use {
        let sum = ones_complement_update(sum, &old.to_be_bytes(), &new.to_be_bytes());
        write_u16(seg, sum_offset, l4_final(ip.protocol, sum));
    }
    write_u16(seg, at, new);
    Ok(())
}

/// A computed UDP checksum of 0 is sent as 0xffff, since 0 means "no checksum" (RFC 768).
fn l4_final(protocol: u8, sum: u16) -> u16 {
    if protocol == ipv4::PROTO_UDP && sum == 0 {
        0xffff
    } else {
        sum
    }
}

/// `ones_complement_update` for replacing `seg[at..at + new.len()]` (at most 8 bytes) by `new`,
/// at any alignment: the update runs over the enclosing 16-bit-aligned words. `seg` starts on
/// a 16-bit boundary of the checksummed data.
fn adjust(sum: u16, seg: &[u8], at: usize, new: &[u8]) -> u16 {
    const MAX: usize = 10;
    let start = at & !1;
    let end = (at + new.len() + 1) & !1;
    let (mut old_w, mut new_w) = ([0u8; MAX], [0u8; MAX]);
    let Some(window) = end.checked_sub(start).filter(|&n| n <= MAX) else {
        return sum;
    };
    for (k, i) in (start..end).enumerate() {
        // Past the end of the segment is the checksum's zero padding.
        let b = seg.get(i).copied().unwrap_or(0);
        old_w[k] = b;
        new_w[k] = match i.checked_sub(at).and_then(|j| new.get(j)) {
            Some(&n) => n,
            None => b,
        };
    }
    ones_complement_update(sum, &old_w[..window], &new_w[..window])
}

/// A big-endian 16-bit word; a lone trailing byte is the high byte of a zero-padded word.
fn word(w: &[u8]) -> u16 {
    match *w {
        [hi, lo] => u16::from_be_bytes([hi, lo]),
        [hi] => u16::from_be_bytes([hi, 0]),
        _ => 0,
    }
}

/// Folds a sum of 16-bit words with end-around carries.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    sum as u16
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn write_u16(b: &mut [u8], at: usize, value: u16) {
    if let Some(field) = at.checked_add(2).and_then(|end| b.get_mut(at..end)) {
        field.copy_from_slice(&value.to_be_bytes());
    }
}

/// The one's-complement sum of `data` as big-endian 16-bit words (a trailing odd byte is
/// padded with zero), added to `initial`. Not folded: chain calls, then [`finish`].
///
/// Reads 8 bytes at a time: a big-endian u64 is four 16-bit words weighted by powers of
/// 2^16, each congruent to 1 modulo 2^16 - 1, so adding u64s (and counting their wraps,
/// 2^64 being congruent to 1 too) keeps the one's-complement sum.
pub fn sum(initial: u64, data: &[u8]) -> u64 {
    let (mut acc, mut wraps) = (0u64, 0u64);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let (r, wrapped) = acc.overflowing_add(v);
        acc = r;
        wraps += u64::from(wrapped);
    }
    let mut total = (acc >> 32) + (acc & 0xffff_ffff) + wraps;
    for w in words.remainder().chunks(2) {
        total += u64::from(word(w));
    }
    initial + total
}

/// Folds a [`sum`] to 16 bits and complements it: the value to store in a checksum field.
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// The IPv4 pseudo-header sum of TCP/UDP (RFC 793 3.1): addresses, protocol, L4 length.
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u64 {
    let s = sum(0, &src);
    let s = sum(s, &dst);
    s + u64::from(protocol) + u64::from(l4_len)
}

/// The folded, uncomplemented form of a sum: what a partial checksum field holds.
pub fn fold_sum(sum: u64) -> u16 {
    fold(sum)
}
