//! What the simulator records per node: traffic and the events the core reported. Counting
//! is cheap by default (packets, and the bytes of table data, which the acceptance tests
//! check); every byte of every message is counted only while
//! [`Sim::count_all_bytes`](super::Sim::count_all_bytes) is on, since it costs an encode
//! per message.

use std::collections::BTreeMap;

use control::gossip::membership;
use control::gossip::tables;
use dataplane::types::Timestamp;

/// Member events seen by one node, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberCounts {
    pub joined: u64,
    pub suspected: u64,
    pub failed: u64,
    pub left: u64,
    pub recovered: u64,
}

#[derive(Clone, Debug, Default)]
pub struct NodeStats {
    /// UDP packets this node sent (lost ones included) and received.
    pub packets_sent: u64,
    pub packets_received: u64,
    /// All bytes sent and received (packets and streams), while all-byte counting is on.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Bytes of table data per network (user messages and bulk syncs carrying it), always.
    pub table_bytes_sent: BTreeMap<String, u64>,
    pub table_bytes_received: BTreeMap<String, u64>,
    pub members: MemberCounts,
    pub table_puts: u64,
    pub table_deletes: u64,
}

impl NodeStats {
    pub(super) fn member_event(&mut self, event: &membership::Event) {
        let c = &mut self.members;
        match event {
            membership::Event::Joined(_) => c.joined += 1,
            membership::Event::Suspected(_) => c.suspected += 1,
            membership::Event::Failed(_) => c.failed += 1,
            membership::Event::Left(_) => c.left += 1,
            membership::Event::Recovered(_) => c.recovered += 1,
        }
    }

    pub(super) fn table_event(&mut self, event: &tables::Event) {
        match event {
            tables::Event::Put { .. } => self.table_puts += 1,
            tables::Event::Deleted { .. } => self.table_deletes += 1,
        }
    }

    /// Table bytes of `network` this node received.
    pub fn table_received(&self, network: &str) -> u64 {
        self.table_bytes_received.get(network).copied().unwrap_or(0)
    }

    /// Table bytes of `network` this node sent.
    pub fn table_sent(&self, network: &str) -> u64 {
        self.table_bytes_sent.get(network).copied().unwrap_or(0)
    }
}

/// `observer` declared `node` failed (or, in [`Sim::suspicions`](super::Sim::suspicions),
/// suspected it) at `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub observer: usize,
    pub node: String,
    pub at: Timestamp,
}

/// A table event about a watched key, on node `node`, at `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub node: usize,
    pub at: Timestamp,
    pub event: tables::Event,
}

/// Bytes of table data per network in one message or stream.
pub(super) type TableBytes = Vec<(String, u64)>;

/// Adds `bytes` to each network's counter.
pub(super) fn add_table_bytes(counters: &mut BTreeMap<String, u64>, bytes: &TableBytes) {
    for (network, n) in bytes {
        match counters.get_mut(network) {
            Some(c) => *c += n,
            None => {
                counters.insert(network.clone(), *n);
            }
        }
    }
}
