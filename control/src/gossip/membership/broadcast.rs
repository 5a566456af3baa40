//! The news queue (memberlist's `TransmitLimitedQueue`): each item is about one thing (a node,
//! or a key the layer above chose); newer news about it replaces what was queued; each item is
//! sent a bounded number of times, the least sent first, as many as fit in a packet.

use crate::gossip::wire::{Message, encode};

/// What a queued item is about: newer news about the same thing replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum About {
    /// Membership news (alive, suspect, dead) about a node.
    Node(String),
    /// A user message of the layer above, keyed by its own choice.
    User(String),
}

#[derive(Debug)]
struct Item {
    about: About,
    message: Message,
    /// Its encoded size, counted once when queued.
    len: usize,
    sent: u32,
}

#[derive(Debug, Default)]
pub struct Broadcasts {
    items: Vec<Item>,
}

/// What one item costs in a compound packet besides its bytes (its 2-byte length).
pub(super) const PART_OVERHEAD: usize = 2;

impl Broadcasts {
    pub fn queue(&mut self, about: About, message: Message) {
        self.items.retain(|i| i.about != about);
        let len = encode(&message).len();
        self.items.push(Item {
            about,
            message,
            len,
            sent: 0,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Up to `max` items within `budget` bytes for one packet, counting their sends; items
    /// sent `limit` times go.
    pub fn take(&mut self, max: usize, mut budget: usize, limit: u32) -> Vec<Message> {
        // The least sent first, the longest queued first among equals: a pass over the queue
        // per number of sends, from the fewest, until the packet is full (one pass, nearly
        // always). Sorting the queue for every packet was most of a large cluster's gossip
        // cost. `sends` is taken before any is counted, so no item goes twice.
        let sends: Vec<u32> = self.items.iter().map(|i| i.sent).collect();
        let mut out = Vec::new();
        let mut level = sends.iter().copied().min();
        while let Some(l) = level {
            let mut next: Option<u32> = None;
            for (i, &s) in sends.iter().enumerate() {
                if out.len() == max {
                    break;
                }
                if s > l {
                    next = Some(next.map_or(s, |n| n.min(s)));
                }
                if s != l {
                    continue;
                }
                let item = &mut self.items[i];
                if item.len + PART_OVERHEAD > budget {
                    continue;
                }
                budget -= item.len + PART_OVERHEAD;
                out.push(item.message.clone());
                item.sent += 1;
            }
            if out.len() == max {
                break;
            }
            level = next;
        }
        self.items.retain(|i| i.sent < limit);
        out
    }
}
