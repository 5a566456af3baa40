//! The discrete-event queue: everything that will happen, ordered by virtual time and then
//! by the order it was scheduled in (so equal times replay identically).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use control::gossip::wire::{Message, PushPull};

use super::stats::TableBytes;

#[derive(Debug)]
pub(super) enum Event {
    /// Node `node` starts and joins the cluster through `seeds`.
    Start { node: usize, seeds: Vec<usize> },
    /// The node asked to be woken now (stale if it has since asked for another time).
    Wake { node: usize },
    /// One UDP packet.
    Packet {
        from: usize,
        to: usize,
        messages: Vec<Message>,
        table: TableBytes,
    },
    /// A push/pull's first half (the initiator's state) arriving at the peer, or, with
    /// `answer`, the peer's state arriving back at the initiator (`to`).
    PushPull {
        from: usize,
        to: usize,
        state: PushPull,
        answer: bool,
    },
    /// A stream user message (a bulk sync), or with `answer`, the reply to one.
    Stream {
        from: usize,
        to: usize,
        payload: Vec<u8>,
        table: TableBytes,
        answer: bool,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

// Reversed: `BinaryHeap` is a max-heap and we want the earliest (time, seq) first.
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

#[derive(Debug, Default)]
pub(super) struct Queue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
}

impl Queue {
    pub fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    /// The time of the next event.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|s| s.at)
    }

    pub fn pop(&mut self) -> Option<(u64, Event)> {
        self.heap.pop().map(|s| (s.at, s.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}
