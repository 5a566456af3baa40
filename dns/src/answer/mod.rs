//! The answering core: one query's bytes in, the reply's bytes out (or "forward it", or
//! "ignore it"). No sockets, no clock; randomness (the shuffle of multi-address answers) comes
//! from the caller's generator so tests are repeatable.

mod fast;
mod reply;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::index::{NameEntry, Snapshot, TtlClass};

pub use reply::{error_reply, max_reply_len};

/// The client's view: its networks in lookup order, and whether its resolv.conf sets `ndots`
/// itself (then an unknown single-label name gets an empty answer, so the stub resolver walks
/// its search domains instead of stopping at an upstream NXDOMAIN).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub networks: Vec<String>,
    pub user_ndots: bool,
}

/// TTLs of local answers, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttls {
    /// For VIPs and SRV records: stable for the life of the service.
    pub vip: u32,
    /// For task and container addresses: short, so a changing task set is seen quickly.
    pub task: u32,
}

impl Default for Ttls {
    fn default() -> Self {
        // Docker answers everything with 600 s, which hides scaling from caching clients for
        // ten minutes. Task answers here live 5 s.
        Self { vip: 600, task: 5 }
    }
}

impl Ttls {
    fn of(self, class: TtlClass) -> u32 {
        match class {
            TtlClass::Vip => self.vip,
            TtlClass::Task => self.task,
        }
    }
}

/// How the query reached us: it bounds the reply's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What a local reply said, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// Records from the tables.
    Answer,
    /// A known name without records of the asked type (AAAA, MX, ...): NOERROR, no data.
    NoData,
    /// An unknown single-label name from a client that set `ndots`.
    SearchWalk,
    /// A client on internal networks only asked for a name we do not hold.
    InternalOnly,
    FormErr,
    NotImp,
}

/// The core's decision for one query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply {
        bytes: Vec<u8>,
        kind: ReplyKind,
        truncated: bool,
    },
    /// Not ours: the shell sends the query to the upstream resolvers.
    Forward,
    /// Not answerable at all (shorter than a header, or a response): send nothing.
    Ignore,
}

/// Answers one query from `snapshot` as seen from `scope`.
pub fn answer(
    snapshot: &Snapshot,
    scope: &Scope,
    ttls: Ttls,
    query: &[u8],
    transport: Transport,
    rng: &mut impl Rng,
) -> Outcome {
    if let Some((bytes, truncated)) = fast::answer(snapshot, scope, ttls, query, transport, rng) {
        return Outcome::Reply {
            bytes,
            kind: ReplyKind::Answer,
            truncated,
        };
    }
    general(snapshot, scope, ttls, query, transport, rng)
}

/// Every query the fast path does not take: decoded and encoded with hickory-proto.
fn general(
    snapshot: &Snapshot,
    scope: &Scope,
    ttls: Ttls,
    query: &[u8],
    transport: Transport,
    rng: &mut impl Rng,
) -> Outcome {
    // Shorter than a header, or a response (QR set): replying would only feed reflection loops.
    if query.len() < reply::HEADER_LEN || query[2] & 0x80 != 0 {
        return Outcome::Ignore;
    }
    let refuse = |code, kind| Outcome::Reply {
        bytes: error_reply(query, code),
        kind,
        truncated: false,
    };
    let Ok(request) = Message::from_vec(query) else {
        return refuse(ResponseCode::FormErr, ReplyKind::FormErr);
    };
    if request.metadata.message_type != MessageType::Query {
        return Outcome::Ignore;
    }
    if request.metadata.op_code != OpCode::Query {
        return refuse(ResponseCode::NotImp, ReplyKind::NotImp);
    }
    let [question] = request.queries.as_slice() else {
        return refuse(ResponseCode::FormErr, ReplyKind::FormErr);
    };
    if question.query_class() != DNSClass::IN {
        return refuse(ResponseCode::NotImp, ReplyKind::NotImp);
    }
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');

    let local = match question.query_type() {
        RecordType::PTR => ptr_answer(snapshot, scope, ttls, question),
        _ => snapshot
            .find(&scope.networks, name)
            .map(|entry| name_answer(entry, ttls, question, rng)),
    };
    let (records, additionals, kind) = match local {
        Some(local) => local,
        None if !name.contains('.') && scope.user_ndots && is_address_query(question) => {
            (Vec::new(), Vec::new(), ReplyKind::SearchWalk)
        }
        None if snapshot.all_internal(&scope.networks) => {
            return refuse(ResponseCode::ServFail, ReplyKind::InternalOnly);
        }
        None => return Outcome::Forward,
    };
    let max_len = max_reply_len(&request, transport);
    let (bytes, truncated) = reply::encode(&request, records, additionals, max_len);
    Outcome::Reply {
        bytes,
        kind,
        truncated,
    }
}

type Local = (
    Vec<hickory_proto::rr::Record>,
    Vec<hickory_proto::rr::Record>,
    ReplyKind,
);

fn is_address_query(question: &Query) -> bool {
    matches!(question.query_type(), RecordType::A | RecordType::AAAA)
}

/// The records of a name we hold: addresses (shuffled), SRV with the targets' addresses as
/// additionals, or nothing of the asked type (NOERROR, no data).
fn name_answer(entry: &NameEntry, ttls: Ttls, question: &Query, rng: &mut impl Rng) -> Local {
    let ttl = ttls.of(entry.ttl);
    let owner = question.name();
    match question.query_type() {
        RecordType::A | RecordType::ANY if !entry.addrs.is_empty() => {
            let mut addrs = entry.addrs.clone();
            addrs.shuffle(rng);
            let records = addrs
                .into_iter()
                .map(|ip| reply::a_record(owner, ttl, ip))
                .collect();
            (records, Vec::new(), ReplyKind::Answer)
        }
        RecordType::SRV if !entry.srv.is_empty() => {
            let mut answers = Vec::new();
            let mut additionals = Vec::new();
            for srv in &entry.srv {
                let Some(target) = reply::name(&srv.target) else {
                    continue;
                };
                answers.push(reply::srv_record(owner, ttl, srv.port, target.clone()));
                additionals.push(reply::a_record(&target, ttl, srv.addr));
            }
            (answers, additionals, ReplyKind::Answer)
        }
        _ => (Vec::new(), Vec::new(), ReplyKind::NoData),
    }
}

/// Reverse lookups of task, container and VIP addresses on the client's networks; anything
/// else (the host's own addresses, the Internet's) is forwarded.
fn ptr_answer(snapshot: &Snapshot, scope: &Scope, ttls: Ttls, question: &Query) -> Option<Local> {
    let net = question.name().parse_arpa_name().ok()?;
    let IpAddr::V4(ip) = net.addr() else {
        return None;
    };
    if net.prefix_len() != 32 {
        return None;
    }
    let entry = snapshot.find_ptr(&scope.networks, ip)?;
    let target = reply::name(&entry.name)?;
    let record = reply::ptr_record(question.name(), ttls.of(entry.ttl), target);
    Some((vec![record], Vec::new(), ReplyKind::Answer))
}
