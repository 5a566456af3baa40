//! Packet framing (`net.go` `ingestPacket`/`handleCommand`/`rawSendMsgPacket`, `util.go`,
//! `label.go`): what wraps the messages of one UDP datagram.
//!
//! memberlist sends `message or compound` → compress (if smaller) → `[12][crc32]` prefix (if
//! the peer speaks protocol ≥ 5) → encrypt (AAD = label) → `[244][len][label]` prefix (if it
//! has a label). [`decode_packet`] peels the same layers in reverse.

use std::borrow::Cow;

use super::error::WireError;
use super::keyring::{Key, Keyring, decrypt, encrypt};
use super::lzw;
use super::messages::{Message, MessageType, decode};
use super::msgpack::{Reader, complete, field, write_map_len, write_raw, write_uint};
use super::{LABEL_MAX, MAX_PACKET};

/// One received datagram, unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    /// The label header's label; empty when there was none (memberlist's "no label").
    pub label: Vec<u8>,
    /// It was encrypted (and opened with one of the keyring's keys).
    pub encrypted: bool,
    /// It carried a CRC32, and the CRC matched.
    pub checksummed: bool,
    /// Every message decoded, in order.
    pub messages: Vec<Message>,
    /// Parts of a compound that could not be decoded (memberlist drops such a part and
    /// handles the rest), and [`WireError::CompoundTruncated`] for parts cut off.
    pub errors: Vec<WireError>,
}

/// Decodes one datagram: label header, decryption (when `keyring` is given every packet
/// must be encrypted, as with memberlist's `GossipVerifyIncoming`), checksum, then
/// compression and compound, each at most once on any path.
///
/// # Errors
/// A [`WireError`] when the packet as a whole is refused; failures inside single parts of a
/// compound are collected in [`Packet::errors`] instead.
pub fn decode_packet(buf: &[u8], keyring: Option<&Keyring>) -> Result<Packet, WireError> {
    if buf.len() > MAX_PACKET {
        return Err(WireError::TooLarge {
            what: "packet",
            len: buf.len(),
            max: MAX_PACKET,
        });
    }
    let (label, rest) = complete(strip_label(buf), "label header")?;
    let mut packet = Packet {
        label: label.to_vec(),
        ..Packet::default()
    };
    let plain: Cow<'_, [u8]> = match keyring {
        Some(keyring) => {
            packet.encrypted = true;
            Cow::Owned(decrypt(keyring.keys(), rest, label)?)
        }
        None => Cow::Borrowed(rest),
    };
    let body = match plain.split_first() {
        Some((&ty, rest)) if ty == MessageType::HasCrc as u8 => {
            let (crc, body) = rest
                .split_first_chunk::<4>()
                .ok_or(WireError::Truncated("checksum header"))?;
            let expected = u32::from_be_bytes(*crc);
            let actual = crc32fast::hash(body);
            if expected != actual {
                return Err(WireError::Checksum { expected, actual });
            }
            packet.checksummed = true;
            body
        }
        _ => &plain[..],
    };
    let mut budget = MAX_PACKET;
    unwrap(body, Layers::default(), &mut budget, &mut packet)?;
    Ok(packet)
}

/// The wrappers already passed on the way to a part: each may appear once.
#[derive(Debug, Clone, Copy, Default)]
struct Layers {
    compound: bool,
    compressed: bool,
}

fn unwrap(
    buf: &[u8],
    layers: Layers,
    budget: &mut usize,
    packet: &mut Packet,
) -> Result<(), WireError> {
    let (&ty, body) = buf.split_first().ok_or(WireError::Empty)?;
    match MessageType::try_from(ty)? {
        MessageType::Compound => {
            if layers.compound {
                return Err(WireError::Nested("compound"));
            }
            let (parts, truncated) = split_compound(body)?;
            let inner = Layers {
                compound: true,
                ..layers
            };
            for part in parts {
                if let Err(e) = unwrap(part, inner, budget, packet) {
                    packet.errors.push(e);
                }
            }
            if truncated > 0 {
                packet.errors.push(WireError::CompoundTruncated(truncated));
            }
            Ok(())
        }
        MessageType::Compress => {
            if layers.compressed {
                return Err(WireError::Nested("compression"));
            }
            // One budget for the whole packet, so 255 compressed parts cannot each expand to
            // the limit.
            let plain = decompress(body, *budget)?;
            *budget -= plain.len();
            let inner = Layers {
                compressed: true,
                ..layers
            };
            unwrap(&plain, inner, budget, packet)
        }
        MessageType::HasCrc | MessageType::Encrypt | MessageType::HasLabel => {
            Err(WireError::UnexpectedType {
                got: ty,
                context: "a packet body (only outermost)",
            })
        }
        _ => {
            packet.messages.push(decode(buf)?);
            Ok(())
        }
    }
}

/// Splits a compound's body (after its type byte) into its parts, as memberlist's
/// `decodeCompoundMessage`: the parts that fit and how many were cut off.
///
/// # Errors
/// [`WireError::Truncated`] if the count byte or the length table is missing.
pub fn split_compound(body: &[u8]) -> Result<(Vec<&[u8]>, usize), WireError> {
    let (&count, rest) = body
        .split_first()
        .ok_or(WireError::Truncated("compound count"))?;
    let count = usize::from(count);
    if rest.len() < 2 * count {
        return Err(WireError::Truncated("compound length table"));
    }
    let (lengths, mut data) = rest.split_at(2 * count);
    let mut parts = Vec::with_capacity(count);
    for (i, len) in lengths.chunks_exact(2).enumerate() {
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if data.len() < len {
            return Ok((parts, count - i));
        }
        let (part, more) = data.split_at(len);
        parts.push(part);
        data = more;
    }
    Ok((parts, 0))
}

/// Builds a compound message of encoded messages, as `makeCompoundMessage`.
///
/// # Errors
/// [`WireError::TooLarge`] for more than 255 parts or a part over 65,535 bytes (a compound
/// cannot express them: memberlist splits into several compounds).
pub fn encode_compound(parts: &[Vec<u8>]) -> Result<Vec<u8>, WireError> {
    let count = u8::try_from(parts.len()).map_err(|_| WireError::TooLarge {
        what: "compound part count",
        len: parts.len(),
        max: 255,
    })?;
    let total: usize = parts.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(2 + 2 * parts.len() + total);
    out.extend_from_slice(&[MessageType::Compound as u8, count]);
    for part in parts {
        let len = u16::try_from(part.len()).map_err(|_| WireError::TooLarge {
            what: "compound part",
            len: part.len(),
            max: 65_535,
        })?;
        out.extend_from_slice(&len.to_be_bytes());
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// Prefixes `[12][crc32-IEEE BE]` of `msg`, for peers whose protocol max is ≥ 5.
#[must_use]
pub fn add_crc(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(MessageType::HasCrc as u8);
    out.extend_from_slice(&crc32fast::hash(msg).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Wraps `msg` as memberlist's `compressPayload`: `[9]` + msgpack `{Algo: 0, Buf: lzw}`.
/// memberlist only sends it when it is smaller than `msg`; the choice is the caller's.
#[must_use]
pub fn compress(msg: &[u8]) -> Vec<u8> {
    let buf = lzw::compress(msg);
    let mut out = Vec::with_capacity(16 + buf.len());
    out.push(MessageType::Compress as u8);
    write_map_len(&mut out, 2);
    field(&mut out, "Algo", |o| write_uint(o, 0));
    field(&mut out, "Buf", |o| write_raw(o, &buf));
    out
}

/// Decodes a compress message's body (after its type byte) and inflates it, producing at
/// most `max_out` bytes.
pub(crate) fn decompress(body: &[u8], max_out: usize) -> Result<Vec<u8>, WireError> {
    let mut r = Reader::new(body, max_out);
    let (algo, buf) = complete(read_compress(&mut r), "compress message")?;
    if algo != 0 {
        return Err(WireError::CompressionAlgo(algo));
    }
    lzw::decompress(buf, max_out)
}

/// The `compress{Algo, Buf}` map. `Algo` is Go's `compressionType uint8`.
pub(crate) fn read_compress<'a>(r: &mut Reader<'a>) -> Result<(u64, &'a [u8]), WireError> {
    let (mut algo, mut buf) = (0, &[][..]);
    r.fields(|k, r| {
        match k {
            b"Algo" => algo = r.uint(u8::MAX.into())?,
            b"Buf" => buf = r.raw()?.unwrap_or_default(),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((algo, buf))
}

/// Prefixes the label header `[244][len][label]`; an empty label means none, as in
/// memberlist, and `msg` is returned as it is.
///
/// # Errors
/// [`WireError::Label`] for a label over 255 bytes.
pub fn add_label(label: &[u8], msg: &[u8]) -> Result<Vec<u8>, WireError> {
    if label.is_empty() {
        return Ok(msg.to_vec());
    }
    let len = u8::try_from(label.len()).map_err(|_| WireError::Label("longer than 255 bytes"))?;
    let mut out = Vec::with_capacity(2 + label.len() + msg.len());
    out.extend_from_slice(&[MessageType::HasLabel as u8, len]);
    out.extend_from_slice(label);
    out.extend_from_slice(msg);
    Ok(out)
}

/// Splits off a label header if there is one: `(label, rest)`, the label empty if none.
/// Running short is [`WireError::Incomplete`]: a stream reads more, a packet is truncated.
pub(crate) fn strip_label(buf: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    match buf {
        [ty, rest @ ..] if *ty == MessageType::HasLabel as u8 => {
            let (&len, rest) = rest.split_first().ok_or(WireError::Incomplete)?;
            if len == 0 {
                return Err(WireError::Label("empty label header"));
            }
            if rest.len() < usize::from(len) {
                return Err(WireError::Incomplete);
            }
            Ok(rest.split_at(usize::from(len)))
        }
        _ => Ok((&[], buf)),
    }
}

/// Seals a packet for sending: encrypts `msg` (already compound/compressed/checksummed as
/// wanted) in version 1 with the label as AAD, then prefixes the label header if `label` is
/// not empty.
///
/// # Errors
/// [`WireError::Label`] for a label over 255 bytes.
pub fn seal_packet(
    msg: &[u8],
    key: &Key,
    nonce: [u8; 12],
    label: &[u8],
) -> Result<Vec<u8>, WireError> {
    if label.len() > LABEL_MAX {
        return Err(WireError::Label("longer than 255 bytes"));
    }
    add_label(label, &encrypt(key, nonce, msg, label))
}
