//! One network's broadcast queue (NetworkDB's per-network `TransmitLimitedQueue`s): our own
//! changes go before relayed ones; a newer change to a key replaces the queued one; each is
//! sent a bounded number of times, the least sent first, as many as fit in a packet.

use super::message::WireEntry;
use crate::gossip::tables::Key;

#[derive(Debug)]
struct Item {
    key: Key,
    entry: WireEntry,
    len: usize,
    own: bool,
    sent: u32,
}

#[derive(Debug, Default)]
pub struct NetworkQueue {
    items: Vec<Item>,
}

/// Relayed changes are not queued past this many items (NetworkDB's rule for changes that
/// came in a bulk sync): the periodic bulk sync repairs what that leaves out.
pub const RELAY_CAP: usize = 500;

impl NetworkQueue {
    /// Queues a change; `own`: written here (sent first).
    pub fn push(&mut self, key: Key, entry: WireEntry, own: bool) {
        self.items.retain(|i| i.key != key);
        let len = entry.encoded_len();
        self.items.push(Item {
            key,
            entry,
            len,
            own,
            sent: 0,
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Entries for one packet within `budget` bytes, counting their sends; items sent
    /// `limit` times go.
    pub fn take(&mut self, mut budget: usize, limit: u32) -> Vec<WireEntry> {
        self.items.sort_by_key(|i| (!i.own, i.sent));
        let mut out = Vec::new();
        for item in &mut self.items {
            if item.len > budget {
                continue;
            }
            budget -= item.len;
            out.push(item.entry.clone());
            item.sent += 1;
        }
        self.items.retain(|i| i.sent < limit);
        out
    }
}
