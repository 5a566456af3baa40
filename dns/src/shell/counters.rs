//! The resolver's counters: every query is counted once by how it was answered, and every
//! refusal or loss has its own name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::answer::ReplyKind;

macro_rules! counters {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// What the resolver counts.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Counter { $(#[doc = $doc] $variant,)* }

        impl Counter {
            pub const ALL: &[Counter] = &[$(Counter::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }
        }
    };
}

counters! {
    QueriesUdp => "queries_udp": "Datagrams received on the listeners.",
    QueriesTcp => "queries_tcp": "Messages received on TCP connections.",
    Answered => "answered": "Answered from the tables.",
    NoData => "nodata": "A known name without records of the asked type (NOERROR, empty).",
    SearchWalk => "search_walk": "Unknown single-label names answered empty for an ndots client.",
    InternalOnly => "internal_only": "Unknown names from clients on internal networks only (SERVFAIL).",
    FormErr => "formerr": "Queries that did not parse, or had not exactly one question.",
    NotImp => "notimp": "Opcodes other than QUERY, classes other than IN.",
    Ignored => "ignored": "Datagrams shorter than a header, or responses: not answered.",
    Truncated => "truncated": "UDP replies cut to the client's size with TC set.",
    Forwarded => "forwarded": "Queries sent on to the upstream resolvers.",
    ForwardAnswered => "forward_answered": "Forwarded queries an upstream answered.",
    ForwardFailed => "forward_failed": "Forwarded queries no upstream answered (SERVFAIL to the client).",
    ForwardCapRefused => "forward_cap_refused": "Queries refused because too many forwards were in flight.",
    TcpConnsRefused => "tcp_conns_refused": "TCP connections closed at once: too many open.",
    SendErrors => "send_errors": "Replies the kernel would not send.",
}

/// Counters shared by every listener of a server.
#[derive(Debug, Default)]
pub struct Counters {
    values: [AtomicU64; Counter::ALL.len()],
}

impl Counters {
    pub fn add(&self, counter: Counter) {
        self.values[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_reply(&self, kind: ReplyKind, truncated: bool) {
        self.add(match kind {
            ReplyKind::Answer => Counter::Answered,
            ReplyKind::NoData => Counter::NoData,
            ReplyKind::SearchWalk => Counter::SearchWalk,
            ReplyKind::InternalOnly => Counter::InternalOnly,
            ReplyKind::FormErr => Counter::FormErr,
            ReplyKind::NotImp => Counter::NotImp,
        });
        if truncated {
            self.add(Counter::Truncated);
        }
    }

    pub fn snapshot(&self) -> DnsStats {
        DnsStats {
            counts: Counter::ALL
                .iter()
                .map(|c| (c.name(), self.values[*c as usize].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// A reading of the counters, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DnsStats {
    pub counts: BTreeMap<&'static str, u64>,
}

impl DnsStats {
    pub fn get(&self, counter: Counter) -> u64 {
        self.counts.get(counter.name()).copied().unwrap_or(0)
    }
}
