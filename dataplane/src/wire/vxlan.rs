//! VXLAN (RFC 7348) and sealed VXLAN headers, as checked views over bytes.
//!
//! Plain header (RFC 7348 §5):
//!
//! ```text
//!  0               1               2               3
//! +-+-+-+-+-+-+-+-+---------------------------------------------+
//! |R|R|R|R|I|R|R|R|                 Reserved                    |
//! +---------------+-----------------------------+---------------+
//! |          VXLAN Network Identifier (VNI)     |   Reserved    |
//! +---------------------------------------------+---------------+
//! ```
//!
//! Sealed header: the same 8 bytes with [`FLAG_SEALED`] also set, then key epoch (u32 BE),
//! sender id (u32 BE) and counter (u64 BE); then the ciphertext of the inner Ethernet frame,
//! then the [`TAG_LEN`]-byte Poly1305 tag. All 24 header bytes are the AEAD's associated data.
//!
//! Receivers ignore the reserved bits and bytes (RFC 7348 §5: "ignored on receipt"); on a
//! sealed frame they are authenticated anyway.

use crate::types::{Epoch, SenderId, Vni};
use thiserror::Error;

/// Length of the plain VXLAN header.
pub const VXLAN_HEADER_LEN: usize = 8;
/// Length of the sealed VXLAN header (plain header + epoch + sender + counter).
pub const SEALED_HEADER_LEN: usize = 24;
/// Length of the Poly1305 tag that ends a sealed datagram.
pub const TAG_LEN: usize = 16;
/// Length of an Ethernet header without VLAN tag: the smallest inner frame we accept.
const ETHERNET_HEADER_LEN: usize = 14;

/// The "VNI present" flag (RFC 7348 calls it I); must be set on every frame.
pub const FLAG_I: u8 = 0x08;
/// Marks a sealed frame. RFC 7348 reserves this bit, and neither of the extensions that
/// allocate VXLAN flag bits uses it: VXLAN-GBP takes 0x80 (G), VXLAN-GPE takes 0x30 (Ver),
/// 0x04 (P), 0x02 (B) and 0x01 (O). A kernel VXLAN device ignores it, so a sealed frame that
/// reaches one is delivered as garbage to a VNI that shoal never shares with a kernel peer.
pub const FLAG_SEALED: u8 = 0x40;
/// Every flag bit we understand; any other set bit is rejected rather than ignored, so that a
/// frame of an extension we do not implement is never mistaken for plain Ethernet.
const KNOWN_FLAGS: u8 = FLAG_I | FLAG_SEALED;

/// Bytes a plain overlay frame adds to the inner IP packet: outer IPv4 (20) + UDP (8) +
/// VXLAN (8) + inner Ethernet (14). Overlay MTU = underlay MTU − this.
pub const PLAIN_OVERHEAD: usize = 20 + 8 + VXLAN_HEADER_LEN + ETHERNET_HEADER_LEN;
/// Bytes a sealed overlay frame adds: [`PLAIN_OVERHEAD`] + 16 more header bytes + the tag.
pub const SEALED_OVERHEAD: usize =
    PLAIN_OVERHEAD + (SEALED_HEADER_LEN - VXLAN_HEADER_LEN) + TAG_LEN;

const _: () = assert!(PLAIN_OVERHEAD == 50 && SEALED_OVERHEAD == 82);

/// Byte ranges of the header fields.
mod field {
    use core::ops::Range;

    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
    pub const EPOCH: Range<usize> = 8..12;
    pub const SENDER: Range<usize> = 12..16;
    pub const COUNTER: Range<usize> = 16..24;
}

/// Why a datagram on the VXLAN port is not one of our frames. Parsing has no state: nothing
/// changed, the datagram is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum VxlanError {
    /// Shorter than its header (plus tag, when sealed), or a plain frame whose payload is
    /// shorter than an Ethernet header.
    #[error("datagram too short for its VXLAN header and payload")]
    Truncated,
    /// The I flag is clear: RFC 7348 says such a frame carries no valid VNI.
    #[error("VXLAN I flag (VNI valid) not set")]
    NoVniFlag,
    /// Flag bits other than I and SEALED are set (the flags byte as received).
    #[error("unknown VXLAN flag bits set in {0:#04x}")]
    UnknownFlags(u8),
}

/// The header of a sealed frame, as parsed or as about to be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    /// The network.
    pub vni: Vni,
    /// The epoch of the key the frame is sealed with.
    pub epoch: Epoch,
    /// The node that sealed it; first 4 bytes of the nonce.
    pub sender: SenderId,
    /// The sender's per-key counter; last 8 bytes of the nonce.
    pub counter: u64,
}

/// A parsed VXLAN header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// RFC 7348 VXLAN: an Ethernet frame in clear follows.
    Plain {
        /// The network.
        vni: Vni,
    },
    /// Sealed VXLAN: ciphertext and tag follow.
    Sealed(SealedHeader),
}

impl Header {
    /// The VNI, whichever the kind.
    pub fn vni(&self) -> Vni {
        match self {
            Header::Plain { vni } => *vni,
            Header::Sealed(h) => h.vni,
        }
    }
}

/// A VXLAN datagram (the UDP payload) whose length and flags have been checked.
///
/// It can only be built by [`Packet::new_checked`], so as long as the buffer is not changed
/// no accessor can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks an untrusted datagram: see [`parse`] for the rules.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, VxlanError> {
        check(buffer.as_ref())?;
        Ok(Packet { buffer })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.bytes()[field::FLAGS]
    }

    /// Whether this is a sealed frame.
    pub fn is_sealed(&self) -> bool {
        self.flags() & FLAG_SEALED != 0
    }

    /// Length of the header: [`VXLAN_HEADER_LEN`] or [`SEALED_HEADER_LEN`].
    pub fn header_len(&self) -> usize {
        if self.is_sealed() {
            SEALED_HEADER_LEN
        } else {
            VXLAN_HEADER_LEN
        }
    }

    /// The VNI.
    pub fn vni(&self) -> Vni {
        let b = &self.bytes()[field::VNI];
        vni_from_be([b[0], b[1], b[2]])
    }

    /// The parsed header.
    pub fn header(&self) -> Header {
        let vni = self.vni();
        if !self.is_sealed() {
            return Header::Plain { vni };
        }
        let b = self.bytes();
        Header::Sealed(SealedHeader {
            vni,
            epoch: Epoch(be_u32(&b[field::EPOCH])),
            sender: SenderId(be_u32(&b[field::SENDER])),
            counter: be_u64(&b[field::COUNTER]),
        })
    }

    /// The raw header bytes (the AEAD's associated data when sealed).
    pub fn header_bytes(&self) -> &[u8] {
        &self.bytes()[..self.header_len()]
    }

    /// The inner Ethernet frame (plain) or its ciphertext without the tag (sealed).
    pub fn payload(&self) -> &[u8] {
        let b = self.bytes();
        if self.is_sealed() {
            &b[SEALED_HEADER_LEN..b.len() - TAG_LEN]
        } else {
            &b[VXLAN_HEADER_LEN..]
        }
    }

    /// The 24 header bytes of a sealed frame (the AEAD's associated data); `None` when plain.
    pub fn sealed_header_bytes(&self) -> Option<&[u8; SEALED_HEADER_LEN]> {
        if !self.is_sealed() {
            return None;
        }
        self.bytes().first_chunk()
    }

    /// The tag of a sealed frame; `None` for a plain one.
    pub fn tag(&self) -> Option<&[u8; TAG_LEN]> {
        if !self.is_sealed() {
            return None;
        }
        self.bytes().last_chunk()
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Parses the header of an untrusted datagram (the UDP payload).
///
/// Rejects: shorter than 8 bytes; I flag clear; flag bits other than I and SEALED; sealed and
/// shorter than header + tag; plain and carrying less than an Ethernet header. Returns the
/// header and its length (where the payload starts).
pub fn parse(datagram: &[u8]) -> Result<(Header, usize), VxlanError> {
    let packet = Packet::new_checked(datagram)?;
    Ok((packet.header(), packet.header_len()))
}

/// The checks of [`parse`], on which every [`Packet`] accessor relies.
fn check(b: &[u8]) -> Result<(), VxlanError> {
    if b.len() < VXLAN_HEADER_LEN {
        return Err(VxlanError::Truncated);
    }
    let flags = b[field::FLAGS];
    if flags & FLAG_I == 0 {
        return Err(VxlanError::NoVniFlag);
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(VxlanError::UnknownFlags(flags));
    }
    let min_len = if flags & FLAG_SEALED != 0 {
        SEALED_HEADER_LEN + TAG_LEN
    } else {
        VXLAN_HEADER_LEN + ETHERNET_HEADER_LEN
    };
    if b.len() < min_len {
        return Err(VxlanError::Truncated);
    }
    Ok(())
}

/// A sealed datagram cut into header, payload and tag, borrowed from one buffer.
pub type SealedParts<'a> = (
    &'a mut [u8; SEALED_HEADER_LEN],
    &'a mut [u8],
    &'a mut [u8; TAG_LEN],
);

/// Splits a sealed datagram buffer into header, payload (ciphertext) and tag, the shape that
/// [`crate::seal::KeySet::seal`] and [`crate::seal::KeySet::open`] take. Checks only the
/// length (at least header + tag), not the flags, so it also serves to seal into a fresh
/// buffer; run [`parse`] first on received datagrams.
pub fn split_sealed(datagram: &mut [u8]) -> Result<SealedParts<'_>, VxlanError> {
    let (header, rest) = datagram
        .split_first_chunk_mut::<SEALED_HEADER_LEN>()
        .ok_or(VxlanError::Truncated)?;
    let (payload, tag) = rest
        .split_last_chunk_mut::<TAG_LEN>()
        .ok_or(VxlanError::Truncated)?;
    Ok((header, payload, tag))
}

/// Writes a plain VXLAN header (reserved fields zero, as RFC 7348 asks of senders).
pub fn emit_plain(vni: Vni, out: &mut [u8; VXLAN_HEADER_LEN]) {
    let v = vni.get().to_be_bytes();
    *out = [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0];
}

/// Writes a sealed VXLAN header.
pub fn emit_sealed(h: &SealedHeader, out: &mut [u8; SEALED_HEADER_LEN]) {
    let (plain, rest) = out.split_at_mut(VXLAN_HEADER_LEN);
    let v = h.vni.get().to_be_bytes();
    plain.copy_from_slice(&[FLAG_I | FLAG_SEALED, 0, 0, 0, v[1], v[2], v[3], 0]);
    let (epoch, rest) = rest.split_at_mut(4);
    let (sender, counter) = rest.split_at_mut(4);
    epoch.copy_from_slice(&h.epoch.0.to_be_bytes());
    sender.copy_from_slice(&h.sender.0.to_be_bytes());
    counter.copy_from_slice(&h.counter.to_be_bytes());
}

/// A VNI from its 3 wire bytes: always fits in 24 bits.
fn vni_from_be(b: [u8; 3]) -> Vni {
    // `Vni` only has a checked constructor; 24 bits always pass it, so the fallback is dead.
    const ZERO: Vni = match Vni::new(0) {
        Some(v) => v,
        None => panic!("0 is a valid VNI"),
    };
    Vni::new(u32::from_be_bytes([0, b[0], b[1], b[2]])).unwrap_or(ZERO)
}

/// Big-endian u32 from a 4-byte field slice (callers pass `field` ranges of checked buffers).
fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

/// Big-endian u64 from an 8-byte field slice.
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}
