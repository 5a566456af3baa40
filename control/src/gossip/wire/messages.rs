//! memberlist's messages (`net.go`): a type byte then the Go struct as a msgpack map keyed by
//! field name. go-msgpack writes the keys **sorted by name**, not in declaration order
//! (`typeInfo.sfi` is sorted by `encName`), so each encoder below lists its fields
//! alphabetically; `codec:",omitempty"` fields (a ping's `Source*`) are left out when zero.
//!
//! Decoders take the keys in any order, skip names they do not know, and leave missing ones
//! at zero, as Go does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::MAX_PACKET;
use super::error::WireError;
use super::msgpack::{
    Reader, complete, field, write_bool, write_bytes, write_map_len, write_raw, write_uint,
};

/// memberlist's message type bytes, as `net.go` numbers them (`pingMsg messageType = iota`
/// up to `errMsg` = 13; `hasLabelMsg = 244` since v0.3.0, which added labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageType {
    Ping = 0,
    IndirectPing = 1,
    Ack = 2,
    Suspect = 3,
    Alive = 4,
    Dead = 5,
    PushPull = 6,
    Compound = 7,
    User = 8,
    Compress = 9,
    Encrypt = 10,
    Nack = 11,
    HasCrc = 12,
    Err = 13,
    HasLabel = 244,
}

impl TryFrom<u8> for MessageType {
    type Error = WireError;

    fn try_from(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            0 => Self::Ping,
            1 => Self::IndirectPing,
            2 => Self::Ack,
            3 => Self::Suspect,
            4 => Self::Alive,
            5 => Self::Dead,
            6 => Self::PushPull,
            7 => Self::Compound,
            8 => Self::User,
            9 => Self::Compress,
            10 => Self::Encrypt,
            11 => Self::Nack,
            12 => Self::HasCrc,
            13 => Self::Err,
            244 => Self::HasLabel,
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// A probe (`ping`). `node` names the intended target so a restarted node under a new name
/// does not answer for the old one. The `source_*` fields (omitted when zero) say where the
/// ack should go when it is not the packet's sender (an indirect probe relayed for someone).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ping {
    pub seq_no: u32,
    pub node: String,
    pub source_addr: Option<IpAddr>,
    pub source_port: u16,
    pub source_node: String,
}

/// A request to probe `target` for us (`indirectPingReq`); `nack` asks for a nack if the
/// target does not answer in time (protocol ≥ 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectPing {
    pub seq_no: u32,
    pub target: IpAddr,
    pub port: u16,
    pub node: String,
    pub nack: bool,
    pub source_addr: Option<IpAddr>,
    pub source_port: u16,
    pub source_node: String,
}

/// The answer to a ping (`ackResp`); Serf puts its Vivaldi coordinate in `payload`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub seq_no: u32,
    pub payload: Vec<u8>,
}

/// "I relayed your indirect probe and got no answer" (`nackResp`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nack {
    pub seq_no: u32,
}

/// `from` suspects `node` at `incarnation`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Suspect {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

/// The six protocol versions a node speaks, in memberlist's `Vsn` order: the memberlist
/// protocol range and current, then the delegate's (Serf's) range and current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Versions {
    pub protocol_min: u8,
    pub protocol_max: u8,
    pub protocol_cur: u8,
    pub delegate_min: u8,
    pub delegate_max: u8,
    pub delegate_cur: u8,
}

impl Versions {
    fn to_bytes(self) -> [u8; 6] {
        [
            self.protocol_min,
            self.protocol_max,
            self.protocol_cur,
            self.delegate_min,
            self.delegate_max,
            self.delegate_cur,
        ]
    }

    /// Go reads the first six bytes when there are at least six and ignores the field when
    /// it is empty (protocol 1); anything in between cannot be read as versions.
    pub(crate) fn from_field(bytes: Option<&[u8]>) -> Result<Option<Self>, WireError> {
        match bytes.unwrap_or_default() {
            [] => Ok(None),
            [pmin, pmax, pcur, dmin, dmax, dcur, ..] => Ok(Some(Self {
                protocol_min: *pmin,
                protocol_max: *pmax,
                protocol_cur: *pcur,
                delegate_min: *dmin,
                delegate_max: *dmax,
                delegate_cur: *dcur,
            })),
            _ => Err(WireError::Malformed("Vsn has fewer than 6 versions")),
        }
    }
}

/// `node` is alive at `addr:port` with `incarnation` (also how a node joins). `meta` is the
/// delegate's node metadata (Serf: its tags), at most [`META_MAX`](super::META_MAX) bytes
/// from a well-behaved peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    pub incarnation: u32,
    pub node: String,
    pub addr: IpAddr,
    pub port: u16,
    pub meta: Vec<u8>,
    pub vsn: Option<Versions>,
}

/// `from` declares `node` dead at `incarnation` (`from == node`: it leaves).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dead {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

/// An error relayed from a stream's far end (`errResp`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrResp {
    pub error: String,
}

/// One memberlist message as a packet carries it (framing, compound and compression aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack(Ack),
    Nack(Nack),
    Suspect(Suspect),
    Alive(Alive),
    Dead(Dead),
    /// A delegate's message, opaque to memberlist: the body is the raw bytes, not msgpack.
    User(Vec<u8>),
    Err(ErrResp),
}

impl Message {
    /// The type byte this message is sent with.
    #[must_use]
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Ping(_) => MessageType::Ping,
            Self::IndirectPing(_) => MessageType::IndirectPing,
            Self::Ack(_) => MessageType::Ack,
            Self::Nack(_) => MessageType::Nack,
            Self::Suspect(_) => MessageType::Suspect,
            Self::Alive(_) => MessageType::Alive,
            Self::Dead(_) => MessageType::Dead,
            Self::User(_) => MessageType::User,
            Self::Err(_) => MessageType::Err,
        }
    }
}

/// Encodes one message as memberlist's `encode(msgType, &msg)`: the type byte, then the
/// msgpack map (or a user message's raw bytes).
#[must_use]
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = vec![msg.message_type() as u8];
    match msg {
        Message::Ping(p) => encode_ping(&mut out, p),
        Message::IndirectPing(p) => encode_indirect(&mut out, p),
        Message::Ack(a) => encode_ack(&mut out, a),
        Message::Nack(n) => {
            write_map_len(&mut out, 1);
            field(&mut out, "SeqNo", |o| write_uint(o, n.seq_no.into()));
        }
        Message::Suspect(s) => encode_accusation(&mut out, s.incarnation, &s.node, &s.from),
        Message::Alive(a) => encode_alive(&mut out, a),
        Message::Dead(d) => encode_accusation(&mut out, d.incarnation, &d.node, &d.from),
        Message::User(body) => out.extend_from_slice(body),
        Message::Err(e) => encode_err(&mut out, e),
    }
    out
}

pub(crate) fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    // IPv4 as 4 bytes: memberlist stores `ip.To4()` when it has one, and so do Go peers.
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub(crate) fn encode_ping(out: &mut Vec<u8>, p: &Ping) {
    let src_addr = p.source_addr.as_ref().map(ip_bytes);
    let n = 2
        + usize::from(src_addr.is_some())
        + usize::from(!p.source_node.is_empty())
        + usize::from(p.source_port != 0);
    write_map_len(out, n);
    field(out, "Node", |o| write_raw(o, p.node.as_bytes()));
    field(out, "SeqNo", |o| write_uint(o, p.seq_no.into()));
    if let Some(addr) = &src_addr {
        field(out, "SourceAddr", |o| write_raw(o, addr));
    }
    if !p.source_node.is_empty() {
        field(out, "SourceNode", |o| {
            write_raw(o, p.source_node.as_bytes())
        });
    }
    if p.source_port != 0 {
        field(out, "SourcePort", |o| write_uint(o, p.source_port.into()));
    }
}

fn encode_indirect(out: &mut Vec<u8>, p: &IndirectPing) {
    let src_addr = p.source_addr.as_ref().map(ip_bytes);
    let n = 5
        + usize::from(src_addr.is_some())
        + usize::from(!p.source_node.is_empty())
        + usize::from(p.source_port != 0);
    write_map_len(out, n);
    field(out, "Nack", |o| write_bool(o, p.nack));
    field(out, "Node", |o| write_raw(o, p.node.as_bytes()));
    field(out, "Port", |o| write_uint(o, p.port.into()));
    field(out, "SeqNo", |o| write_uint(o, p.seq_no.into()));
    if let Some(addr) = &src_addr {
        field(out, "SourceAddr", |o| write_raw(o, addr));
    }
    if !p.source_node.is_empty() {
        field(out, "SourceNode", |o| {
            write_raw(o, p.source_node.as_bytes())
        });
    }
    if p.source_port != 0 {
        field(out, "SourcePort", |o| write_uint(o, p.source_port.into()));
    }
    field(out, "Target", |o| write_bytes(o, &ip_bytes(&p.target)));
}

pub(crate) fn encode_ack(out: &mut Vec<u8>, a: &Ack) {
    write_map_len(out, 2);
    field(out, "Payload", |o| write_bytes(o, &a.payload));
    field(out, "SeqNo", |o| write_uint(o, a.seq_no.into()));
}

/// `suspect` and `dead` have the same three fields.
fn encode_accusation(out: &mut Vec<u8>, incarnation: u32, node: &str, from: &str) {
    write_map_len(out, 3);
    field(out, "From", |o| write_raw(o, from.as_bytes()));
    field(out, "Incarnation", |o| write_uint(o, incarnation.into()));
    field(out, "Node", |o| write_raw(o, node.as_bytes()));
}

fn encode_alive(out: &mut Vec<u8>, a: &Alive) {
    write_map_len(out, 6);
    field(out, "Addr", |o| write_bytes(o, &ip_bytes(&a.addr)));
    field(out, "Incarnation", |o| write_uint(o, a.incarnation.into()));
    field(out, "Meta", |o| write_bytes(o, &a.meta));
    field(out, "Node", |o| write_raw(o, a.node.as_bytes()));
    field(out, "Port", |o| write_uint(o, a.port.into()));
    field(out, "Vsn", |o| write_vsn(o, a.vsn));
}

pub(crate) fn write_vsn(out: &mut Vec<u8>, vsn: Option<Versions>) {
    match vsn {
        Some(v) => write_raw(out, &v.to_bytes()),
        None => write_bytes(out, &[]),
    }
}

pub(crate) fn encode_err(out: &mut Vec<u8>, e: &ErrResp) {
    write_map_len(out, 1);
    field(out, "Error", |o| write_raw(o, e.error.as_bytes()));
}

/// Decodes one message (type byte and body), the inverse of [`encode`]. Framing types
/// (compound, compress, checksum, encrypt, label) and stream-only push/pull are
/// [`WireError::UnexpectedType`] here: [`decode_packet`](super::decode_packet) unwraps the
/// framing first.
///
/// # Errors
/// Any [`WireError`] but `Incomplete`: the buffer is taken as the whole message.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    let (&ty, body) = buf.split_first().ok_or(WireError::Empty)?;
    let ty = MessageType::try_from(ty)?;
    if ty == MessageType::User {
        return Ok(Message::User(body.to_vec()));
    }
    let mut r = Reader::new(body, MAX_PACKET);
    complete(decode_body(ty, &mut r), "message body")
}

/// Decodes the msgpack body of a message of type `ty` from `r`.
pub(crate) fn decode_body(ty: MessageType, r: &mut Reader<'_>) -> Result<Message, WireError> {
    Ok(match ty {
        MessageType::Ping => Message::Ping(decode_ping(r)?),
        MessageType::IndirectPing => Message::IndirectPing(decode_indirect(r)?),
        MessageType::Ack => Message::Ack(decode_ack(r)?),
        MessageType::Nack => {
            let mut n = Nack::default();
            r.fields(|k, r| {
                match k {
                    b"SeqNo" => n.seq_no = u32_field(r)?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            Message::Nack(n)
        }
        MessageType::Suspect => {
            let (incarnation, node, from) = decode_accusation(r)?;
            Message::Suspect(Suspect {
                incarnation,
                node,
                from,
            })
        }
        MessageType::Alive => Message::Alive(decode_alive(r)?),
        MessageType::Dead => {
            let (incarnation, node, from) = decode_accusation(r)?;
            Message::Dead(Dead {
                incarnation,
                node,
                from,
            })
        }
        MessageType::Err => Message::Err(decode_err(r)?),
        other => {
            return Err(WireError::UnexpectedType {
                got: other as u8,
                context: "a single message",
            });
        }
    })
}

pub(crate) fn u32_field(r: &mut Reader<'_>) -> Result<u32, WireError> {
    Ok(r.uint(u32::MAX.into())? as u32)
}

pub(crate) fn u16_field(r: &mut Reader<'_>) -> Result<u16, WireError> {
    Ok(r.uint(u16::MAX.into())? as u16)
}

pub(crate) fn string_field(r: &mut Reader<'_>, name: &'static str) -> Result<String, WireError> {
    let bytes = r.raw()?.unwrap_or_default();
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Utf8(name))
}

pub(crate) fn bytes_field(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    Ok(r.raw()?.unwrap_or_default().to_vec())
}

/// An address field: nil/empty is `None`; 4 or 16 bytes an address (an IPv4-mapped IPv6
/// address is the IPv4 address, as Go's `net.IP` treats it); any other length an error.
pub(crate) fn ip_field(
    r: &mut Reader<'_>,
    name: &'static str,
) -> Result<Option<IpAddr>, WireError> {
    let bytes = r.raw()?.unwrap_or_default();
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ok(Some(IpAddr::V4(Ipv4Addr::from(v4))))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ok(Some(IpAddr::V6(Ipv6Addr::from(v6)).to_canonical()))
    } else if bytes.is_empty() {
        Ok(None)
    } else {
        Err(WireError::Address {
            field: name,
            len: bytes.len(),
        })
    }
}

/// A field that must hold an address.
pub(crate) fn required_ip(addr: Option<IpAddr>, name: &'static str) -> Result<IpAddr, WireError> {
    addr.ok_or(WireError::Address {
        field: name,
        len: 0,
    })
}

pub(crate) fn decode_ping(r: &mut Reader<'_>) -> Result<Ping, WireError> {
    let mut p = Ping::default();
    r.fields(|k, r| {
        match k {
            b"SeqNo" => p.seq_no = u32_field(r)?,
            b"Node" => p.node = string_field(r, "ping.Node")?,
            b"SourceAddr" => p.source_addr = ip_field(r, "ping.SourceAddr")?,
            b"SourcePort" => p.source_port = u16_field(r)?,
            b"SourceNode" => p.source_node = string_field(r, "ping.SourceNode")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

fn decode_indirect(r: &mut Reader<'_>) -> Result<IndirectPing, WireError> {
    let (mut seq_no, mut target, mut port, mut node, mut nack) = (0, None, 0, String::new(), false);
    let (mut source_addr, mut source_port, mut source_node) = (None, 0, String::new());
    r.fields(|k, r| {
        match k {
            b"SeqNo" => seq_no = u32_field(r)?,
            b"Target" => target = ip_field(r, "indirectPing.Target")?,
            b"Port" => port = u16_field(r)?,
            b"Node" => node = string_field(r, "indirectPing.Node")?,
            b"Nack" => nack = r.bool()?,
            b"SourceAddr" => source_addr = ip_field(r, "indirectPing.SourceAddr")?,
            b"SourcePort" => source_port = u16_field(r)?,
            b"SourceNode" => source_node = string_field(r, "indirectPing.SourceNode")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(IndirectPing {
        seq_no,
        target: required_ip(target, "indirectPing.Target")?,
        port,
        node,
        nack,
        source_addr,
        source_port,
        source_node,
    })
}

pub(crate) fn decode_ack(r: &mut Reader<'_>) -> Result<Ack, WireError> {
    let mut a = Ack::default();
    r.fields(|k, r| {
        match k {
            b"SeqNo" => a.seq_no = u32_field(r)?,
            b"Payload" => a.payload = bytes_field(r)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

fn decode_accusation(r: &mut Reader<'_>) -> Result<(u32, String, String), WireError> {
    let (mut incarnation, mut node, mut from) = (0, String::new(), String::new());
    r.fields(|k, r| {
        match k {
            b"Incarnation" => incarnation = u32_field(r)?,
            b"Node" => node = string_field(r, "Node")?,
            b"From" => from = string_field(r, "From")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((incarnation, node, from))
}

fn decode_alive(r: &mut Reader<'_>) -> Result<Alive, WireError> {
    let (mut incarnation, mut node, mut addr, mut port) = (0, String::new(), None, 0);
    let (mut meta, mut vsn) = (Vec::new(), None);
    r.fields(|k, r| {
        match k {
            b"Incarnation" => incarnation = u32_field(r)?,
            b"Node" => node = string_field(r, "alive.Node")?,
            b"Addr" => addr = ip_field(r, "alive.Addr")?,
            b"Port" => port = u16_field(r)?,
            b"Meta" => meta = bytes_field(r)?,
            b"Vsn" => vsn = Versions::from_field(r.raw()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Alive {
        incarnation,
        node,
        addr: required_ip(addr, "alive.Addr")?,
        port,
        meta,
        vsn,
    })
}

pub(crate) fn decode_err(r: &mut Reader<'_>) -> Result<ErrResp, WireError> {
    let mut e = ErrResp::default();
    r.fields(|k, r| {
        match k {
            b"Error" => e.error = string_field(r, "errResp.Error")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(e)
}
