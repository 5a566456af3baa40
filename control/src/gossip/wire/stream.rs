//! Stream framing (`net.go`: `sendLocalState`, `readStream`, `readRemoteState`,
//! `encryptLocalState`, `sendUserMsg`, `sendPingAndWaitForAck`): what one TCP connection on
//! 7946 carries.
//!
//! A stream holds one message: an optional label header, then either `[10][u32 BE len]` and
//! that many encrypted bytes (AAD = those 5 bytes + label), or the plaintext directly. The
//! plaintext is `[9]` + msgpack `compress{Algo, Buf}` around the rest (memberlist compresses
//! streams by default), or the rest itself:
//! - push/pull: `[6]` + msgpack `pushPullHeader{Join, Nodes, UserStateLen}` + `Nodes` ×
//!   msgpack `pushNodeState` + `UserStateLen` raw bytes of delegate state;
//! - user message: `[8]` + msgpack `userMsgHeader{UserMsgLen}` + the raw bytes;
//! - ping, ack, err: `[type]` + one msgpack map, as in a packet.
//!
//! [`decode_stream`] works on whatever has been read so far and says
//! [`WireError::Incomplete`] until the message is whole, so a shell reads, retries, reads.

use std::net::IpAddr;

use super::error::WireError;
use super::frame::{add_label, read_compress, strip_label};
use super::keyring::{Key, Keyring, decrypt, encrypt};
use super::messages::{
    Ack, ErrResp, MessageType, Ping, Versions, bytes_field, decode_ack, decode_err, decode_ping,
    encode_ack, encode_err, encode_ping, ip_bytes, ip_field, required_ip, string_field, u16_field,
    u32_field, write_vsn,
};
use super::msgpack::{
    Reader, complete, field, write_bool, write_bytes, write_map_len, write_raw, write_uint,
};
use super::{LABEL_MAX, MAX_PUSH_NODES, MAX_STREAM, lzw};

/// A member's state as push/pull carries it (`NodeStateType`: alive 0, suspect 1, dead 2,
/// left 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum NodeState {
    #[default]
    Alive,
    Suspect,
    Dead,
    Left,
}

impl NodeState {
    fn code(self) -> u64 {
        match self {
            Self::Alive => 0,
            Self::Suspect => 1,
            Self::Dead => 2,
            Self::Left => 3,
        }
    }

    fn from_code(code: u64) -> Result<Self, WireError> {
        Ok(match code {
            0 => Self::Alive,
            1 => Self::Suspect,
            2 => Self::Dead,
            3 => Self::Left,
            _ => return Err(WireError::Malformed("unknown node state")),
        })
    }
}

/// One member in a push/pull (`pushNodeState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNodeState {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub meta: Vec<u8>,
    pub incarnation: u32,
    pub state: NodeState,
    pub vsn: Option<Versions>,
}

/// A full state exchange: every member we know, then the delegate's state (Serf: its
/// `messagePushPull`; NetworkDB: its network attachments), opaque here. `join` is set on the
/// exchange a joining node starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushPull {
    pub join: bool,
    pub nodes: Vec<PushNodeState>,
    pub user_state: Vec<u8>,
}

/// The message a stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    PushPull(PushPull),
    /// A TCP probe (the fallback when UDP probes fail); answered with an [`Ack`].
    Ping(Ping),
    Ack(Ack),
    /// A delegate message sent reliably (memberlist `SendReliable`).
    User(Vec<u8>),
    /// The far end could not read what we sent.
    Err(ErrResp),
}

/// A decoded stream message and how it was wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame {
    /// The label header's label; empty when there was none.
    pub label: Vec<u8>,
    pub encrypted: bool,
    pub compressed: bool,
    pub message: StreamMessage,
}

/// Encodes a stream message's plaintext (unlabelled, unencrypted, uncompressed).
#[must_use]
pub fn encode_stream(msg: &StreamMessage) -> Vec<u8> {
    match msg {
        StreamMessage::PushPull(pp) => encode_push_pull(pp),
        StreamMessage::Ping(p) => {
            let mut out = vec![MessageType::Ping as u8];
            encode_ping(&mut out, p);
            out
        }
        StreamMessage::Ack(a) => {
            let mut out = vec![MessageType::Ack as u8];
            encode_ack(&mut out, a);
            out
        }
        StreamMessage::User(body) => {
            let mut out = vec![MessageType::User as u8];
            write_map_len(&mut out, 1);
            field(&mut out, "UserMsgLen", |o| write_uint(o, body.len() as u64));
            out.extend_from_slice(body);
            out
        }
        StreamMessage::Err(e) => {
            let mut out = vec![MessageType::Err as u8];
            encode_err(&mut out, e);
            out
        }
    }
}

fn encode_push_pull(pp: &PushPull) -> Vec<u8> {
    let mut out = vec![MessageType::PushPull as u8];
    write_map_len(&mut out, 3);
    field(&mut out, "Join", |o| write_bool(o, pp.join));
    field(&mut out, "Nodes", |o| write_uint(o, pp.nodes.len() as u64));
    field(&mut out, "UserStateLen", |o| {
        write_uint(o, pp.user_state.len() as u64);
    });
    for n in &pp.nodes {
        write_map_len(&mut out, 7);
        field(&mut out, "Addr", |o| write_raw(o, &ip_bytes(&n.addr)));
        field(&mut out, "Incarnation", |o| {
            write_uint(o, n.incarnation.into())
        });
        field(&mut out, "Meta", |o| write_bytes(o, &n.meta));
        field(&mut out, "Name", |o| write_raw(o, n.name.as_bytes()));
        field(&mut out, "Port", |o| write_uint(o, n.port.into()));
        field(&mut out, "State", |o| write_uint(o, n.state.code()));
        field(&mut out, "Vsn", |o| write_vsn(o, n.vsn));
    }
    out.extend_from_slice(&pp.user_state);
    out
}

/// Seals a stream's plaintext as memberlist's `encryptLocalState`: `[10][u32 BE len]` then
/// version-1 ciphertext whose AAD is those 5 bytes followed by the label; the label header
/// goes first when `label` is not empty.
///
/// # Errors
/// [`WireError::Label`] for a label over 255 bytes; [`WireError::TooLarge`] for plaintext
/// over [`MAX_STREAM`].
pub fn seal_stream(
    plain: &[u8],
    key: &Key,
    nonce: [u8; 12],
    label: &[u8],
) -> Result<Vec<u8>, WireError> {
    if label.len() > LABEL_MAX {
        return Err(WireError::Label("longer than 255 bytes"));
    }
    if plain.len() > MAX_STREAM {
        return Err(WireError::TooLarge {
            what: "stream",
            len: plain.len(),
            max: MAX_STREAM,
        });
    }
    // version + nonce + ciphertext + tag; fits u32 as plain is at most MAX_STREAM.
    let sealed_len = (1 + 12 + plain.len() + 16) as u32;
    let mut header = vec![MessageType::Encrypt as u8];
    header.extend_from_slice(&sealed_len.to_be_bytes());
    let mut aad = header.clone();
    aad.extend_from_slice(label);
    header.extend_from_slice(&encrypt(key, nonce, plain, &aad));
    add_label(label, &header)
}

/// Decodes the stream message at the start of `buf`, returning it and the number of bytes
/// it took. With a `keyring` the stream must be encrypted; without one it must not be (the
/// defaults of memberlist's `GossipVerifyIncoming`).
///
/// # Errors
/// [`WireError::Incomplete`] while `buf` is a valid but unfinished prefix (read more, call
/// again); [`WireError::TooLarge`] once it could only finish past [`MAX_STREAM`]; any other
/// [`WireError`] for a stream to drop.
pub fn decode_stream(
    buf: &[u8],
    keyring: Option<&Keyring>,
) -> Result<(StreamFrame, usize), WireError> {
    // The most a whole stream can span: a label header, the encryption header, the message.
    const SPAN: usize = 2 + LABEL_MAX + 5 + MAX_STREAM;
    let result = decode_stream_inner(buf, keyring);
    if result == Err(WireError::Incomplete) && buf.len() >= SPAN {
        return Err(WireError::TooLarge {
            what: "stream",
            len: buf.len(),
            max: MAX_STREAM,
        });
    }
    result
}

fn decode_stream_inner(
    buf: &[u8],
    keyring: Option<&Keyring>,
) -> Result<(StreamFrame, usize), WireError> {
    let (label, rest) = strip_label(buf)?;
    let label_len = buf.len() - rest.len();
    let &ty = rest.first().ok_or(WireError::Incomplete)?;
    if ty == MessageType::Encrypt as u8 {
        let keyring = keyring.ok_or(WireError::NotConfigured)?;
        let header = rest.get(..5).ok_or(WireError::Incomplete)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_STREAM {
            return Err(WireError::TooLarge {
                what: "encrypted stream",
                len,
                max: MAX_STREAM,
            });
        }
        let sealed = rest.get(5..5 + len).ok_or(WireError::Incomplete)?;
        let mut aad = header.to_vec();
        aad.extend_from_slice(label);
        let plain = decrypt(keyring.keys(), sealed, &aad)?;
        // Whatever follows the message inside the sealed bytes is ignored, as Go does.
        let (message, compressed, _) = complete(parse_plain(&plain), "encrypted stream")?;
        let frame = StreamFrame {
            label: label.to_vec(),
            encrypted: true,
            compressed,
            message,
        };
        return Ok((frame, label_len + 5 + len));
    }
    if keyring.is_some() {
        return Err(WireError::NotEncrypted);
    }
    let (message, compressed, used) = parse_plain(rest)?;
    let frame = StreamFrame {
        label: label.to_vec(),
        encrypted: false,
        compressed,
        message,
    };
    Ok((frame, label_len + used))
}

/// A plaintext stream message, compressed or not: `(message, compressed, bytes used)`.
fn parse_plain(buf: &[u8]) -> Result<(StreamMessage, bool, usize), WireError> {
    let (&ty, body) = buf.split_first().ok_or(WireError::Incomplete)?;
    if ty != MessageType::Compress as u8 {
        let (message, used) = parse_message(buf)?;
        return Ok((message, false, used));
    }
    let mut r = Reader::new(body, MAX_STREAM);
    let (algo, data) = read_compress(&mut r)?;
    let used = 1 + r.position();
    if algo != 0 {
        return Err(WireError::CompressionAlgo(algo));
    }
    let plain = lzw::decompress(data, MAX_STREAM)?;
    if plain.first() == Some(&(MessageType::Compress as u8)) {
        return Err(WireError::Nested("compression"));
    }
    let (message, _) = complete(parse_message(&plain), "compressed stream")?;
    Ok((message, true, used))
}

/// An uncompressed stream message: `(message, bytes used)`.
fn parse_message(buf: &[u8]) -> Result<(StreamMessage, usize), WireError> {
    let (&ty, body) = buf.split_first().ok_or(WireError::Incomplete)?;
    let mut r = Reader::new(body, MAX_STREAM);
    let message = match MessageType::try_from(ty)? {
        MessageType::PushPull => StreamMessage::PushPull(read_push_pull(&mut r)?),
        MessageType::User => {
            let mut len = 0;
            r.fields(|k, r| {
                match k {
                    b"UserMsgLen" => len = length(r, "user message", MAX_STREAM)?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            StreamMessage::User(r.take(len)?.to_vec())
        }
        MessageType::Ping => StreamMessage::Ping(decode_ping(&mut r)?),
        MessageType::Ack => StreamMessage::Ack(decode_ack(&mut r)?),
        MessageType::Err => StreamMessage::Err(decode_err(&mut r)?),
        _ => {
            return Err(WireError::UnexpectedType {
                got: ty,
                context: "a stream",
            });
        }
    };
    Ok((message, 1 + r.position()))
}

/// A Go `int` length field, refused above `max` before any byte of it is awaited.
fn length(r: &mut Reader<'_>, what: &'static str, max: usize) -> Result<usize, WireError> {
    let len = r.uint(u64::MAX)?;
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(WireError::TooLarge {
            what,
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max,
        }),
    }
}

fn read_push_pull(r: &mut Reader<'_>) -> Result<PushPull, WireError> {
    let (mut join, mut count, mut user_len) = (false, 0, 0);
    r.fields(|k, r| {
        match k {
            b"Join" => join = r.bool()?,
            b"Nodes" => count = length(r, "push/pull node count", MAX_PUSH_NODES)?,
            b"UserStateLen" => user_len = length(r, "push/pull user state", MAX_STREAM)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // Grow as states arrive: the count is the peer's claim, not a reason to allocate.
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(read_node_state(r)?);
    }
    let user_state = r.take(user_len)?.to_vec();
    Ok(PushPull {
        join,
        nodes,
        user_state,
    })
}

fn read_node_state(r: &mut Reader<'_>) -> Result<PushNodeState, WireError> {
    let (mut name, mut addr, mut port, mut meta) = (String::new(), None, 0, Vec::new());
    let (mut incarnation, mut state, mut vsn) = (0, NodeState::Alive, None);
    r.fields(|k, r| {
        match k {
            b"Name" => name = string_field(r, "pushNodeState.Name")?,
            b"Addr" => addr = ip_field(r, "pushNodeState.Addr")?,
            b"Port" => port = u16_field(r)?,
            b"Meta" => meta = bytes_field(r)?,
            b"Incarnation" => incarnation = u32_field(r)?,
            b"State" => state = NodeState::from_code(r.uint(u64::MAX)?)?,
            b"Vsn" => vsn = Versions::from_field(r.raw()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(PushNodeState {
        name,
        addr: required_ip(addr, "pushNodeState.Addr")?,
        port,
        meta,
        incarnation,
        state,
        vsn,
    })
}
