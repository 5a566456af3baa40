//! Building replies: records, error replies straight from a header's bytes, and the size
//! limits (512 B over UDP unless EDNS0 allows more; TCP up to 64 KiB) with truncation.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record};

use super::Transport;

pub const HEADER_LEN: usize = 12;
/// The classic UDP limit without EDNS0 (RFC 1035 §4.2.1).
pub(super) const UDP_PLAIN: usize = 512;
/// The most we send over UDP whatever a client offers, and the size we advertise.
pub(super) const UDP_EDNS_MAX: u16 = 4096;

pub fn a_record(owner: &Name, ttl: u32, ip: Ipv4Addr) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))
}

pub fn srv_record(owner: &Name, ttl: u32, port: u16, target: Name) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::SRV(SRV::new(0, 0, port, target)))
}

pub fn ptr_record(owner: &Name, ttl: u32, target: Name) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target)))
}

/// A name from the index (always valid: the records checked it), as a DNS name.
pub fn name(text: &str) -> Option<Name> {
    Name::from_ascii(text).ok()
}

/// The largest reply the client accepts over this transport.
pub fn max_reply_len(request: &Message, transport: Transport) -> usize {
    limit(transport, request.edns.as_ref().map(|e| e.max_payload()))
}

/// The reply size limit for a transport and the EDNS payload size the query offered, if any
/// (the general path and the fast path share it).
pub(super) fn limit(transport: Transport, edns_payload: Option<u16>) -> usize {
    match (transport, edns_payload) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => UDP_PLAIN,
        (Transport::Udp, Some(size)) => usize::from(size.min(UDP_EDNS_MAX)).max(UDP_PLAIN),
    }
}

/// Encodes the reply to `request`; when it is larger than `max_len` the additionals go, then
/// answers from the end until it fits, and TC is set so the client retries over TCP.
pub fn encode(
    request: &Message,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    max_len: usize,
) -> (Vec<u8>, bool) {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.checking_disabled = request.metadata.checking_disabled;
    reply.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_EDNS_MAX);
        reply.edns = Some(edns);
    }
    reply.answers = answers;
    reply.additionals = additionals;
    let mut bytes = to_bytes(&reply);
    if bytes.len() <= max_len {
        return (bytes, false);
    }
    reply.metadata.truncation = true;
    reply.additionals.clear();
    bytes = to_bytes(&reply);
    while bytes.len() > max_len && !reply.answers.is_empty() {
        // Guess how many answers fit from the average record size, then step down exactly.
        let keep = (reply.answers.len() * max_len / bytes.len()).min(reply.answers.len() - 1);
        reply.answers.truncate(keep);
        bytes = to_bytes(&reply);
    }
    (bytes, true)
}

/// Our own messages always encode (valid names, bounded counts); should one ever fail, the
/// client gets SERVFAIL rather than silence.
fn to_bytes(reply: &Message) -> Vec<u8> {
    reply.to_vec().unwrap_or_else(|_| {
        let mut header = [0u8; HEADER_LEN];
        header[..2].copy_from_slice(&reply.metadata.id.to_be_bytes());
        error_reply(&header, ResponseCode::ServFail)
    })
}

/// An error reply built from the query's header bytes alone, so even a query that does not
/// parse gets an answer: same id and opcode, QR and RA set, RD echoed, no sections.
pub fn error_reply(query: &[u8], code: ResponseCode) -> Vec<u8> {
    let byte = |at: usize| query.get(at).copied().unwrap_or(0);
    let mut reply = vec![0u8; HEADER_LEN];
    reply[0] = byte(0);
    reply[1] = byte(1);
    let opcode_and_rd = byte(2) & 0b0111_1001;
    reply[2] = 0x80 | opcode_and_rd;
    reply[3] = 0x80 | (code.low() & 0x0f);
    reply
}
