//! The fast path for the common query: one A question for a name the tables hold, no EDNS or
//! a plain OPT record. The reply is the query's own header and question with the answers
//! appended (each owner a compression pointer to the question), written straight into bytes:
//! no message is decoded or encoded. Anything else returns `None` and takes the general path,
//! which gives the same answer (a property test holds the two to that).

use rand::Rng;
use rand::seq::SliceRandom;

use super::{Scope, Transport, Ttls};
use crate::index::Snapshot;

const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// An A record whose owner points at the question: pointer, type, class, TTL, length, address.
const A_RECORD_LEN: usize = 2 + 2 + 2 + 4 + 2 + 4;
/// An OPT record with no options: root name, type, payload size, extended rcode and flags,
/// length.
const OPT_LEN: usize = 1 + 2 + 2 + 4 + 2;

/// The reply and whether it was truncated, or `None` for the general path.
pub fn answer(
    snapshot: &Snapshot,
    scope: &Scope,
    ttls: Ttls,
    query: &[u8],
    transport: Transport,
    rng: &mut impl Rng,
) -> Option<(Vec<u8>, bool)> {
    let word = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]))
    };
    // QUERY opcode, not a response, one question, no answers or authorities, at most one
    // additional (the OPT).
    let flags = word(2)?;
    if flags & 0xf800 != 0 || word(4)? != 1 || word(6)? != 0 || word(8)? != 0 || word(10)? > 1 {
        return None;
    }
    let mut name = [0u8; 255];
    let (name_len, question_end) = read_name(query, &mut name)?;
    if word(question_end)? != TYPE_A || word(question_end + 2)? != CLASS_IN {
        return None;
    }
    let question_end = question_end + 4;
    let edns_payload = match word(10)? {
        0 if question_end == query.len() => None,
        1 => Some(plain_opt(&query[question_end..])?),
        _ => return None,
    };
    let name = std::str::from_utf8(&name[..name_len]).ok()?;
    let entry = snapshot.find(&scope.networks, name)?;
    if entry.addrs.is_empty() {
        return None;
    }
    let max_len = super::reply::limit(transport, edns_payload);
    let opt_len = if edns_payload.is_some() { OPT_LEN } else { 0 };
    let room = max_len.checked_sub(question_end + opt_len)? / A_RECORD_LEN;
    let count = entry.addrs.len().min(room);
    let truncated = count < entry.addrs.len();

    let mut reply = Vec::with_capacity(question_end + count * A_RECORD_LEN + opt_len);
    reply.extend_from_slice(&query[..question_end]);
    // QR, AA, RD as asked, RA; TC when cut; CD as asked; NOERROR.
    reply[2] = 0x80 | 0x04 | (query[2] & 0x01) | if truncated { 0x02 } else { 0 };
    reply[3] = 0x80 | (query[3] & 0x10);
    let count16 = u16::try_from(count).ok()?;
    reply[6..8].copy_from_slice(&count16.to_be_bytes());
    reply[10..12].copy_from_slice(&u16::from(edns_payload.is_some()).to_be_bytes());
    let ttl = ttls.of(entry.ttl).to_be_bytes();
    // The shuffle is the general path's (same generator, same length): the same order.
    let mut stack: [usize; 64] = std::array::from_fn(|i| i);
    let mut heap: Vec<usize> = Vec::new();
    let shuffled: &mut [usize] = match stack.get_mut(..entry.addrs.len()) {
        Some(order) => order,
        None => {
            heap.extend(0..entry.addrs.len());
            &mut heap
        }
    };
    shuffled.shuffle(rng);
    for &i in shuffled.iter().take(count) {
        reply.extend_from_slice(&[0xc0, HEADER_LEN as u8, 0, 1, 0, 1]);
        reply.extend_from_slice(&ttl);
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&entry.addrs[i].octets());
    }
    if edns_payload.is_some() {
        reply.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
        reply.extend_from_slice(&super::reply::UDP_EDNS_MAX.to_be_bytes());
        reply.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    Some((reply, truncated))
}

/// Reads the question's name (uncompressed labels, as every stub sends it) lower-cased into
/// `out` as dotted text without the trailing dot. Returns its length and where the name ends
/// in the message. `None` for anything unusual: pointers, bytes that are not printable ASCII
/// or a dot inside a label, the root name.
fn read_name(query: &[u8], out: &mut [u8; 255]) -> Option<(usize, usize)> {
    let mut at = HEADER_LEN;
    let mut len = 0;
    loop {
        let label = usize::from(*query.get(at)?);
        at += 1;
        if label == 0 {
            break;
        }
        if label > 63 {
            return None;
        }
        let bytes = query.get(at..at + label)?;
        if len > 0 {
            *out.get_mut(len)? = b'.';
            len += 1;
        }
        for &b in bytes {
            if !b.is_ascii_graphic() || b == b'.' || b == b'\\' {
                return None;
            }
            *out.get_mut(len)? = b.to_ascii_lowercase();
            len += 1;
        }
        at += label;
    }
    (len > 0).then_some((len, at))
}

/// The UDP payload size of an OPT record that is exactly the rest of the message, version 0,
/// no options; `None` otherwise.
fn plain_opt(rest: &[u8]) -> Option<u16> {
    let [0, 0, 41, size_hi, size_lo, 0, 0, _, _, 0, 0] = *rest else {
        return None;
    };
    Some(u16::from_be_bytes([size_hi, size_lo]))
}
