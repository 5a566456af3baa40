//! Segmentation and coalescing offload for TAP devices opened with a virtio-net header
//! (`IFF_VNET_HDR`), so that the agent moves 64 KiB TCP segments through a TAP in one
//! syscall instead of one frame at a time.
//!
//! - Transmit (container → agent): the kernel hands over a TSO "super-frame" with a
//!   [`VnetHdr`] saying `GSO_TCPV4` and the MSS; [`TcpSegmenter`] cuts it into wire-sized
//!   frames with their own IPv4 and TCP headers and checksums. A frame with
//!   `NEEDS_CSUM` gets its checksum finished by [`complete_checksum`].
//! - Receive (agent → container): [`TcpCoalescer`] merges consecutive in-order segments of
//!   one TCP flow back into one super-frame, written with `GSO_TCPV4` (the container's kernel
//!   takes it as one GRO packet), like wireguard-go's userspace GRO.
//!
//! The offsets of a virtio-net header count from the start of the frame, Ethernet header
//! included (helpers written for TUN count from the IP header). Sans-IO, no allocation per
//! frame, and no panic on any input: the header and the frame are untrusted.
//!
//! Read first: the virtio spec §5.1.6 (struct virtio_net_hdr), Linux
//! `include/uapi/linux/virtio_net.h`, RFC 793 §3.1 (TCP checksum).

use crate::wire::checksum::{finish, fold_sum, pseudo_header_sum, sum};

/// Length of the legacy virtio-net header the TAP prepends (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

const ETH_LEN: usize = 14;
const IPV4_MIN: usize = 20;
const TCP_MIN: usize = 20;
const PROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
/// The largest IPv4 packet: what one coalesced frame may grow to.
const IPV4_MAX: usize = 65535;

/// The virtio-net header in front of every frame on an `IFF_VNET_HDR` TAP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The L4 checksum is partial: finish it at `csum_start + csum_offset`.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum was verified already: the receiving kernel may skip it.
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    /// Bit set with a GSO type when the segments carry ECN (CWR only on the first).
    pub const GSO_ECN: u8 = 0x80;

    /// Parses the first [`VNET_HDR_LEN`] bytes. Legacy virtio headers are in the host's byte
    /// order (the TAP is not switched to a fixed endianness).
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = bytes.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// The GSO type without the ECN bit.
    pub fn gso(&self) -> u8 {
        self.gso_type & !Self::GSO_ECN
    }
}

/// Why a frame could not be segmented or its checksum finished. The frame is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("frame shorter than its headers")]
    Truncated,
    #[error("not an IPv4 TCP frame")]
    NotTcp4,
    #[error("checksum offsets outside the frame")]
    BadOffsets,
    #[error("GSO type {0} is not offered to the TAP")]
    UnsupportedGso(u8),
    #[error("segment size {0} is below the minimum TCP MSS")]
    TinySegments(u16),
}

/// Linux's `TCP_MIN_MSS`: a smaller segment size would turn one 64 KiB frame into thousands
/// of datagrams.
const MIN_MSS: u16 = 88;

/// Finishes a partial checksum (`F_NEEDS_CSUM`): the field holds the pseudo-header sum;
/// summing from `csum_start` to the end, field included, gives the full sum.
pub fn complete_checksum(frame: &mut [u8], hdr: &VnetHdr) -> Result<(), OffloadError> {
    if hdr.flags & VnetHdr::F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > frame.len() {
        return Err(OffloadError::BadOffsets);
    }
    let mut value = finish(sum(0, &frame[start..]));
    // In UDP a zero checksum means "none": a computed zero is sent as its other form, 0xffff
    // (RFC 768), as the kernel does.
    let is_udp = frame.get(ETH_LEN + 9) == Some(&17) && hdr.csum_offset == 6;
    if is_udp && value == 0 {
        value = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Where the headers of an Ethernet/IPv4/TCP frame are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tcp4Layout {
    /// Offset of the TCP header (the IPv4 header starts at 14).
    tcp_at: usize,
    /// Offset of the TCP payload.
    payload_at: usize,
    /// End of the IPv4 packet (Ethernet padding excluded).
    end: usize,
}

fn tcp4_layout(frame: &[u8]) -> Option<Tcp4Layout> {
    if frame.len() < ETH_LEN + IPV4_MIN || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_MIN || ip[9] != PROTO_TCP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let tcp_at = ETH_LEN + ihl;
    let end = ETH_LEN + total;
    if total < ihl + TCP_MIN || end > frame.len() {
        return None;
    }
    let doff = usize::from(frame[tcp_at + 12] >> 4) * 4;
    let payload_at = tcp_at + doff;
    if doff < TCP_MIN || payload_at > end {
        return None;
    }
    Some(Tcp4Layout {
        tcp_at,
        payload_at,
        end,
    })
}

fn ipv4_addrs(frame: &[u8]) -> ([u8; 4], [u8; 4]) {
    let mut src = [0u8; 4];
    let mut dst = [0u8; 4];
    src.copy_from_slice(&frame[ETH_LEN + 12..ETH_LEN + 16]);
    dst.copy_from_slice(&frame[ETH_LEN + 16..ETH_LEN + 20]);
    (src, dst)
}

/// Rewrites the IPv4 header checksum of `frame` (headers `14..tcp_at`).
fn fix_ipv4_checksum(frame: &mut [u8], tcp_at: usize) {
    frame[ETH_LEN + 10..ETH_LEN + 12].fill(0);
    let c = finish(sum(0, &frame[ETH_LEN..tcp_at]));
    frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
}

/// Whether the TCP checksum of `frame[..l.end]` is right.
fn tcp_checksum_ok(frame: &[u8], l: &Tcp4Layout) -> bool {
    let (src, dst) = ipv4_addrs(frame);
    let tcp_len = (l.end - l.tcp_at) as u16;
    fold_sum(sum(
        pseudo_header_sum(src, dst, PROTO_TCP, tcp_len),
        &frame[l.tcp_at..l.end],
    )) == 0xffff
}

/// Cuts a TSO super-frame into wire-sized frames, each with correct headers and checksums.
#[derive(Debug)]
pub struct TcpSegmenter<'a> {
    frame: &'a [u8],
    layout: Tcp4Layout,
    mss: usize,
    offset: usize,
    index: u16,
}

impl<'a> TcpSegmenter<'a> {
    /// Prepares to segment `frame` as `hdr` describes (`GSO_TCPV4`, MSS in `gso_size`).
    pub fn new(frame: &'a [u8], hdr: &VnetHdr) -> Result<TcpSegmenter<'a>, OffloadError> {
        if hdr.gso() != VnetHdr::GSO_TCPV4 {
            return Err(OffloadError::UnsupportedGso(hdr.gso_type));
        }
        let layout = tcp4_layout(frame).ok_or(OffloadError::NotTcp4)?;
        if hdr.gso_size < MIN_MSS {
            return Err(OffloadError::TinySegments(hdr.gso_size));
        }
        let mss = usize::from(hdr.gso_size);
        Ok(TcpSegmenter {
            frame,
            layout,
            mss,
            offset: 0,
            index: 0,
        })
    }

    /// The length of the longest segment this will write: headers plus one MSS.
    pub fn max_segment_len(&self) -> usize {
        self.layout.payload_at + self.mss
    }

    /// Writes the next segment into `out` and returns its length; `None` when all are out,
    /// or when `out` is shorter than [`Self::max_segment_len`].
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let Tcp4Layout {
            tcp_at,
            payload_at,
            end,
        } = self.layout;
        let payload_len = end - payload_at;
        let first = self.index == 0;
        if self.offset >= payload_len && !(first && payload_len == 0) {
            return None;
        }
        let chunk = self.mss.min(payload_len - self.offset);
        let len = payload_at + chunk;
        let out = out.get_mut(..len)?;
        out[..payload_at].copy_from_slice(&self.frame[..payload_at]);
        let from = payload_at + self.offset;
        out[payload_at..].copy_from_slice(&self.frame[from..from + chunk]);
        let last = self.offset + chunk >= payload_len;

        // IPv4: length, a fresh id per segment (as the kernel's GSO does), checksum.
        let ip_total = (len - ETH_LEN) as u16;
        out[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&ip_total.to_be_bytes());
        let id = u16::from_be_bytes([out[ETH_LEN + 4], out[ETH_LEN + 5]]).wrapping_add(self.index);
        out[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&id.to_be_bytes());
        fix_ipv4_checksum(out, tcp_at);

        // TCP: sequence number; FIN and PSH only on the last segment, CWR only on the first.
        let seq = u32::from_be_bytes([
            out[tcp_at + 4],
            out[tcp_at + 5],
            out[tcp_at + 6],
            out[tcp_at + 7],
        ])
        .wrapping_add(self.offset as u32);
        out[tcp_at + 4..tcp_at + 8].copy_from_slice(&seq.to_be_bytes());
        if !last {
            out[tcp_at + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            out[tcp_at + 13] &= !TCP_CWR;
        }
        out[tcp_at + 16..tcp_at + 18].fill(0);
        let (src, dst) = ipv4_addrs(out);
        let pseudo = pseudo_header_sum(src, dst, PROTO_TCP, (len - tcp_at) as u16);
        let c = finish(sum(pseudo, &out[tcp_at..len]));
        out[tcp_at + 16..tcp_at + 18].copy_from_slice(&c.to_be_bytes());

        self.offset += chunk;
        self.index += 1;
        Some(len)
    }
}

/// Merges consecutive segments of one TCP flow into one super-frame (userspace GRO).
///
/// Only plain data segments merge (flags ACK, and PSH on the last), in order, with identical
/// headers but for sequence, length, id and checksums, every segment but the last one MSS
/// long, and a TCP checksum that verifies: a bad one is passed on alone for the receiving
/// kernel to drop, never hidden inside a super-frame whose checksum we recompute.
#[derive(Debug)]
pub struct TcpCoalescer {
    buf: Box<[u8]>,
    len: usize,
    layout: Tcp4Layout,
    segments: u16,
    mss: usize,
    next_seq: u32,
    /// No more segments may join: the last one was short or carried PSH.
    closed: bool,
}

impl Default for TcpCoalescer {
    fn default() -> Self {
        TcpCoalescer::new()
    }
}

impl TcpCoalescer {
    pub fn new() -> TcpCoalescer {
        TcpCoalescer {
            buf: vec![0u8; ETH_LEN + IPV4_MAX].into_boxed_slice(),
            len: 0,
            layout: Tcp4Layout {
                tcp_at: 0,
                payload_at: 0,
                end: 0,
            },
            segments: 0,
            mss: 0,
            next_seq: 0,
            closed: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// How many segments are held.
    pub fn segments(&self) -> u16 {
        self.segments
    }

    /// Takes `frame` in if it starts or extends the held super-frame. `false`: the caller
    /// writes out what is held ([`Self::take`]) and then pushes again, or writes `frame` alone
    /// if it is not a mergeable TCP segment at all.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let Some(l) = tcp4_layout(frame) else {
            return false;
        };
        let flags = frame[l.tcp_at + 13];
        let payload = l.end - l.payload_at;
        if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 || payload == 0 {
            return false;
        }
        // Fragments never merge, nor does a frame whose IPv4 header checksum is wrong: `take`
        // recomputes it, which would make a corrupted header look valid.
        if u16::from_be_bytes([frame[ETH_LEN + 6], frame[ETH_LEN + 7]]) & 0x3fff != 0
            || fold_sum(sum(0, &frame[ETH_LEN..l.tcp_at])) != 0xffff
        {
            return false;
        }
        let seq = u32::from_be_bytes([
            frame[l.tcp_at + 4],
            frame[l.tcp_at + 5],
            frame[l.tcp_at + 6],
            frame[l.tcp_at + 7],
        ]);
        if self.segments == 0 {
            if !tcp_checksum_ok(frame, &l) {
                return false;
            }
            self.buf[..l.end].copy_from_slice(&frame[..l.end]);
            self.len = l.end;
            self.layout = l;
            self.segments = 1;
            self.mss = payload;
            self.next_seq = seq.wrapping_add(payload as u32);
            self.closed = flags & TCP_PSH != 0;
            return true;
        }
        if self.closed
            || seq != self.next_seq
            || payload > self.mss
            || l.payload_at != self.layout.payload_at
            || self.len + payload > ETH_LEN + IPV4_MAX
            || !self.same_headers(frame, &l)
            || !tcp_checksum_ok(frame, &l)
        {
            return false;
        }
        self.buf[self.len..self.len + payload].copy_from_slice(&frame[l.payload_at..l.end]);
        self.len += payload;
        self.segments += 1;
        self.next_seq = seq.wrapping_add(payload as u32);
        if flags & TCP_PSH != 0 {
            self.buf[self.layout.tcp_at + 13] |= TCP_PSH;
        }
        self.closed = payload < self.mss || flags & TCP_PSH != 0;
        true
    }

    /// Everything that must match for two segments to be one stream of bytes: Ethernet
    /// addresses; IPv4 TOS, flags, TTL, protocol, addresses (and options); TCP ports, ack,
    /// window and options (timestamps included).
    fn same_headers(&self, frame: &[u8], l: &Tcp4Layout) -> bool {
        let held = &self.buf;
        let tcp_at = self.layout.tcp_at;
        l.tcp_at == tcp_at
            && held[..ETH_LEN + 2] == frame[..ETH_LEN + 2]
            && held[ETH_LEN + 6..ETH_LEN + 10] == frame[ETH_LEN + 6..ETH_LEN + 10]
            && held[ETH_LEN + 12..tcp_at] == frame[ETH_LEN + 12..tcp_at]
            && held[tcp_at..tcp_at + 4] == frame[tcp_at..tcp_at + 4]
            && held[tcp_at + 8..tcp_at + 13] == frame[tcp_at + 8..tcp_at + 13]
            && held[tcp_at + 14..tcp_at + 16] == frame[tcp_at + 14..tcp_at + 16]
            && held[tcp_at + 20..self.layout.payload_at] == frame[tcp_at + 20..l.payload_at]
    }

    /// Hands out what is held, with the header to write it with, and empties the coalescer.
    /// A single segment goes out as it came (checksum verified); a merged one as a
    /// `GSO_TCPV4` frame with a partial checksum the kernel finishes.
    pub fn take(&mut self) -> Option<(VnetHdr, &[u8])> {
        if self.segments == 0 {
            return None;
        }
        let segments = std::mem::take(&mut self.segments);
        let Tcp4Layout {
            tcp_at, payload_at, ..
        } = self.layout;
        let len = self.len;
        let frame = &mut self.buf[..len];
        if segments == 1 {
            let hdr = VnetHdr {
                flags: VnetHdr::F_DATA_VALID,
                ..VnetHdr::default()
            };
            return Some((hdr, frame));
        }
        let ip_total = (len - ETH_LEN) as u16;
        frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&ip_total.to_be_bytes());
        fix_ipv4_checksum(frame, tcp_at);
        let (src, dst) = ipv4_addrs(frame);
        let partial = fold_sum(pseudo_header_sum(
            src,
            dst,
            PROTO_TCP,
            (len - tcp_at) as u16,
        ));
        frame[tcp_at + 16..tcp_at + 18].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: payload_at as u16,
            gso_size: self.mss as u16,
            csum_start: tcp_at as u16,
            csum_offset: 16,
        };
        Some((hdr, frame))
    }
}

#[cfg(test)]
#[path = "offload_tests.rs"]
mod tests;
