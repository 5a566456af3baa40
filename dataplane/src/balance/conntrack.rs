//! The flow table behind VIP balancing: one entry per flow, found from either direction,
//! bounded in size, with per-state idle timeouts.
//!
//! Bounded: at the maximum, a new flow evicts the oldest idle entry, taking half-open TCP
//! flows (a SYN flood) first, then closing ones, then datagram flows, established TCP last.
//! "Oldest idle" is kept per state class by a FIFO with second chance: a packet only stamps
//! its entry, and an entry found at the front with a newer stamp goes to the back. So a packet
//! costs two map lookups and no reordering, and eviction and expiry are amortised O(1).

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::flow::FlowKey;
use crate::types::Timestamp;

/// Limits and idle timeouts. Docker's IPVS forgets an idle TCP connection after 900 s and the
/// next packet is silently dropped; established flows here live a day by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackConfig {
    pub max_entries: usize,
    pub tcp_established: Duration,
    /// A TCP flow whose backend has not answered yet (SYN sent).
    pub tcp_opening: Duration,
    /// After FIN both ways or a RST: stray retransmissions still map, then it goes.
    pub tcp_closing: Duration,
    /// UDP flows and ICMP echo.
    pub datagram: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            max_entries: 262_144,
            tcp_established: Duration::from_secs(24 * 3600),
            tcp_opening: Duration::from_secs(30),
            tcp_closing: Duration::from_secs(10),
            datagram: Duration::from_secs(300),
        }
    }
}

/// The state class of an entry; each has its own timeout and idle queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Opening,
    Closing,
    Datagram,
    Established,
}

impl Class {
    /// Eviction order: cheapest to lose first.
    const EVICTION_ORDER: [Class; 4] = [
        Class::Opening,
        Class::Closing,
        Class::Datagram,
        Class::Established,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One flow: the client's direction and the backend it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Client → VIP, as the client sent it.
    pub orig: FlowKey,
    pub backend: Ipv4Addr,
    pub class: Class,
    pub fin_orig: bool,
    pub fin_reply: bool,
    /// The backend was removed from the service: the next packet is answered with a reset.
    pub reset: bool,
    pub last_seen: Timestamp,
}

impl Entry {
    /// Backend → client, as the backend answers.
    pub fn reply_key(&self) -> FlowKey {
        FlowKey {
            dst: self.backend,
            ..self.orig
        }
        .reversed()
    }

    /// Counted in its backend's open flows.
    pub fn is_open(&self) -> bool {
        self.class != Class::Closing
    }
}

/// A handle to a live entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

#[derive(Clone, Copy, Debug)]
struct Queued {
    slot: u32,
    generation: u32,
    stamp: Timestamp,
}

#[derive(Debug)]
pub struct Conntrack {
    config: ConntrackConfig,
    slots: Vec<Option<Entry>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    by_orig: BTreeMap<FlowKey, u32>,
    by_reply: BTreeMap<FlowKey, u32>,
    queues: [VecDeque<Queued>; 4],
    len: usize,
}

impl Conntrack {
    pub fn new(config: ConntrackConfig) -> Self {
        Self {
            config,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_orig: BTreeMap::new(),
            by_reply: BTreeMap::new(),
            queues: Default::default(),
            len: 0,
        }
    }

    pub fn config(&self) -> ConntrackConfig {
        self.config
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn timeout(&self, class: Class) -> u64 {
        let d = match class {
            Class::Opening => self.config.tcp_opening,
            Class::Closing => self.config.tcp_closing,
            Class::Datagram => self.config.datagram,
            Class::Established => self.config.tcp_established,
        };
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    fn expired(&self, entry: &Entry, now: Timestamp) -> bool {
        now.saturating_sub_nanos(entry.last_seen) > self.timeout(entry.class)
    }

    pub fn get(&self, slot: Slot) -> Option<&Entry> {
        self.slots.get(slot.0 as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut Entry> {
        self.slots.get_mut(slot.0 as usize)?.as_mut()
    }

    /// The live entry a packet of direction `key` belongs to: `(slot, is_reply)`. An entry
    /// past its timeout is removed and handed to `gone` instead.
    pub fn find(
        &mut self,
        key: &FlowKey,
        now: Timestamp,
        gone: &mut impl FnMut(Entry),
    ) -> Option<(Slot, bool)> {
        let (slot, is_reply) = match self.by_orig.get(key) {
            Some(&slot) => (slot, false),
            None => (*self.by_reply.get(key)?, true),
        };
        let entry = self.slots.get(slot as usize)?.as_ref()?;
        if self.expired(entry, now) {
            if let Some(entry) = self.remove(Slot(slot)) {
                gone(entry);
            }
            return None;
        }
        Some((Slot(slot), is_reply))
    }

    /// Records a packet on an entry: its time, and its new class if it changed.
    pub fn touch(&mut self, slot: Slot, now: Timestamp, class: Class) {
        let Some(entry) = self.slots.get_mut(slot.0 as usize).and_then(|e| e.as_mut()) else {
            return;
        };
        entry.last_seen = now;
        if entry.class != class {
            entry.class = class;
            let generation = self.generations[slot.0 as usize];
            self.queues[class.index()].push_back(Queued {
                slot: slot.0,
                generation,
                stamp: now,
            });
        }
    }

    /// Adds a flow. When the table is full the oldest idle entry (by eviction order) goes to
    /// `gone` first. Returns `None` only for a table with a maximum of zero.
    pub fn insert(&mut self, entry: Entry, gone: &mut impl FnMut(Entry)) -> Option<Slot> {
        while self.len >= self.config.max_entries {
            let evicted = self.evict_one()?;
            gone(evicted);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                u32::try_from(self.slots.len() - 1).ok()?
            }
        };
        let generation = self.generations[slot as usize];
        self.by_orig.insert(entry.orig, slot);
        self.by_reply.insert(entry.reply_key(), slot);
        self.queues[entry.class.index()].push_back(Queued {
            slot,
            generation,
            stamp: entry.last_seen,
        });
        self.slots[slot as usize] = Some(entry);
        self.len += 1;
        Some(Slot(slot))
    }

    /// Removes an entry; its slot may be reused at once (queue records of it go stale).
    pub fn remove(&mut self, slot: Slot) -> Option<Entry> {
        let entry = self.slots.get_mut(slot.0 as usize)?.take()?;
        self.by_orig.remove(&entry.orig);
        self.by_reply.remove(&entry.reply_key());
        self.generations[slot.0 as usize] = self.generations[slot.0 as usize].wrapping_add(1);
        self.free.push(slot.0);
        self.len -= 1;
        Some(entry)
    }

    /// The live entry a queue record still stands for, if it is current for that queue.
    fn current(&self, queued: &Queued, class: Class) -> Option<&Entry> {
        if self.generations.get(queued.slot as usize) != Some(&queued.generation) {
            return None;
        }
        self.slots
            .get(queued.slot as usize)?
            .as_ref()
            .filter(|e| e.class == class)
    }

    /// The front of `class`'s queue after moving re-stamped entries to the back: the oldest
    /// idle entry of that class.
    fn oldest(&mut self, class: Class) -> Option<Queued> {
        let q = class.index();
        while let Some(front) = self.queues[q].front().copied() {
            let Some(entry) = self.current(&front, class) else {
                self.queues[q].pop_front();
                continue;
            };
            if entry.last_seen > front.stamp {
                let stamp = entry.last_seen;
                self.queues[q].pop_front();
                self.queues[q].push_back(Queued { stamp, ..front });
                continue;
            }
            return Some(front);
        }
        None
    }

    fn evict_one(&mut self) -> Option<Entry> {
        for class in Class::EVICTION_ORDER {
            if let Some(front) = self.oldest(class) {
                self.queues[class.index()].pop_front();
                return self.remove(Slot(front.slot));
            }
        }
        None
    }

    /// Removes every entry idle past its timeout, handing each to `gone`.
    pub fn expire(&mut self, now: Timestamp, gone: &mut impl FnMut(Entry)) {
        for class in Class::EVICTION_ORDER {
            while let Some(front) = self.oldest(class) {
                let expired = self.slots[front.slot as usize]
                    .as_ref()
                    .is_some_and(|e| self.expired(e, now));
                if !expired {
                    break;
                }
                self.queues[class.index()].pop_front();
                if let Some(entry) = self.remove(Slot(front.slot)) {
                    gone(entry);
                }
            }
        }
    }

    /// Every live entry (for marking a removed backend's flows, and for status).
    pub fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.slots.iter_mut().filter_map(|e| e.as_mut())
    }
}
