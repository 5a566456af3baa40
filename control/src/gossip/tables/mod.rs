//! Network-scoped tables, Docker's NetworkDB semantics, sans-IO: entries `(table, network,
//! key) → value`, each owned by the node that wrote it and stamped with a Lamport time; the
//! newer stamp wins everywhere; deletes are tombstones reaped after a grace period; only nodes
//! attached to a network store its entries; a failed node's entries are hidden and come back
//! if it returns before they are reaped. A node is the authority on its own entries: a stale
//! one about it (written before a restart) is answered with its current value or a tombstone,
//! stamped newer. [`netdb`](super::netdb) carries [`Change`]s in gossip user messages and bulk
//! syncs ([`Tables::bulk`]); a watch of [`Event`]s feeds the dataplane and DNS.

mod attachments;
#[cfg(test)]
mod tests;

pub use attachments::{Attachment, Attachments};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dataplane::types::Timestamp;
use serde::{Deserialize, Serialize};

/// One entry's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub network: String,
    pub table: String,
    pub key: String,
}

/// A write, as it travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub key: Key,
    pub owner: String,
    pub ltime: u64,
    /// `None`: deleted (a tombstone).
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    owner: String,
    ltime: u64,
    value: Option<Vec<u8>>,
    /// When it became a tombstone (reaped `grace` later).
    deleted_at: Option<Timestamp>,
    /// Its owner failed: not shown until it comes back.
    hidden: bool,
}

/// What watchers see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put {
        key: Key,
        owner: String,
        value: Vec<u8>,
    },
    Deleted {
        key: Key,
    },
}

#[derive(Debug)]
pub struct Tables {
    me: String,
    clock: u64,
    grace: Duration,
    /// Networks this node is attached to.
    networks: BTreeSet<String>,
    /// Nodes attached to each network (from their join/leave announcements).
    attachments: Attachments,
    entries: BTreeMap<Key, Entry>,
}

/// What applying a change did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// It was newer than what we held: worth relaying.
    pub fresh: bool,
    /// What watchers see of it.
    pub event: Option<Event>,
    /// A stale change about one of our own keys: our answer, to broadcast.
    pub correction: Option<Change>,
}

fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    Duration::from_nanos(now.saturating_sub_nanos(since))
}

impl Tables {
    /// `grace`: how long tombstones (and a failed node's entries) are kept (Docker: 30 min).
    pub fn new(me: &str, grace: Duration) -> Self {
        Self {
            me: me.to_owned(),
            clock: 0,
            grace,
            networks: BTreeSet::new(),
            attachments: Attachments::default(),
            entries: BTreeMap::new(),
        }
    }

    fn tick(&mut self, seen: u64) -> u64 {
        self.clock = self.clock.max(seen) + 1;
        self.clock
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Attaches this node to a network: from now on it stores the network's entries (a bulk
    /// sync with its members fills them in). Returns the announcement to broadcast.
    pub fn join_network(&mut self, network: &str) -> Attachment {
        self.networks.insert(network.to_owned());
        self.attachments.announce(&self.me, network, true)
    }

    pub fn is_attached(&self, network: &str) -> bool {
        self.networks.contains(network)
    }

    /// The networks this node is attached to.
    pub fn networks(&self) -> impl Iterator<Item = &str> {
        self.networks.iter().map(String::as_str)
    }

    /// Leaves a network: its entries are forgotten here, ours are deleted everywhere. Returns
    /// those deletes, the watchers' events and the announcement to broadcast.
    pub fn leave_network(
        &mut self,
        now: Timestamp,
        network: &str,
    ) -> (Vec<Change>, Vec<Event>, Attachment) {
        let ours: Vec<Key> = self
            .entries
            .iter()
            .filter(|(k, e)| k.network == network && e.owner == self.me && e.value.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut changes = Vec::new();
        for key in ours {
            if let Some((change, _)) = self.write(now, key, None) {
                changes.push(change);
            }
        }
        let announcement = self.attachments.announce(&self.me, network, false);
        let events = self
            .entries
            .iter()
            .filter(|(k, e)| k.network == network && e.value.is_some() && !e.hidden)
            .map(|(k, _)| Event::Deleted { key: k.clone() })
            .collect();
        self.entries.retain(|k, _| k.network != network);
        self.networks.remove(network);
        (changes, events, announcement)
    }

    /// Another node's join or leave of a network (or a stale one of ours: then the returned
    /// correction is to be broadcast). True if it changed who is attached.
    pub fn apply_attachment(&mut self, record: Attachment) -> (bool, Option<Attachment>) {
        let networks = &self.networks;
        self.attachments
            .apply(&self.me, |n| networks.contains(n), record)
    }

    /// Every attachment record known, for a push/pull.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.attachments.all()
    }

    /// This node's own attachment records, for a bulk sync.
    pub fn own_attachments(&self) -> Vec<Attachment> {
        self.attachments.of_node(&self.me)
    }

    /// The nodes a network's changes go to (its members but us): only they store them.
    pub fn peers_of(&self, network: &str) -> Vec<String> {
        self.attachments
            .nodes(network)
            .filter(|n| *n != self.me)
            .map(str::to_owned)
            .collect()
    }

    /// Whether `node` is attached to `network` (a peer of it, if not us).
    pub fn is_attached_node(&self, network: &str, node: &str) -> bool {
        self.attachments.attached(network, node)
    }

    /// How many nodes (us included) are attached to `network`.
    pub fn network_size(&self, network: &str) -> usize {
        self.attachments.nodes(network).count()
    }

    /// Writes (or with `None` deletes) one of our entries; the change to broadcast to the
    /// network's peers, and the event, or `None` if this node is not on that network.
    pub fn write(
        &mut self,
        now: Timestamp,
        key: Key,
        value: Option<Vec<u8>>,
    ) -> Option<(Change, Option<Event>)> {
        if !self.networks.contains(&key.network) {
            return None;
        }
        let ltime = self.tick(self.entries.get(&key).map_or(0, |e| e.ltime));
        let change = Change {
            key,
            owner: self.me.clone(),
            ltime,
            value,
        };
        let event = self.store(now, change.clone());
        Some((change, event))
    }

    /// A change from the network: applied if it is newer than what we have (by Lamport time,
    /// the owner's name breaking ties) and we are on its network.
    pub fn apply(&mut self, now: Timestamp, change: Change) -> Applied {
        if !self.networks.contains(&change.key.network) {
            return Applied::default();
        }
        self.clock = self.clock.max(change.ltime);
        let have = self.entries.get(&change.key);
        if let Some(have) = have
            && (have.ltime, &have.owner) >= (change.ltime, &change.owner)
        {
            return Applied::default();
        }
        if change.owner == self.me {
            // Ours, but not what we hold: a stale write from before a restart (or a value
            // we since changed). Our current value, or its deletion, outbids it.
            let current = have
                .filter(|e| e.owner == self.me)
                .and_then(|e| e.value.clone());
            if current != change.value {
                let correction = self.write(now, change.key, current).map(|(c, _)| c);
                return Applied {
                    correction,
                    ..Applied::default()
                };
            }
        }
        Applied {
            fresh: true,
            event: self.store(now, change),
            correction: None,
        }
    }

    /// Stores a change known to be newer; the watchers' event.
    fn store(&mut self, now: Timestamp, change: Change) -> Option<Event> {
        let event = match &change.value {
            Some(value) => Some(Event::Put {
                key: change.key.clone(),
                owner: change.owner.clone(),
                value: value.clone(),
            }),
            None => self
                .entries
                .get(&change.key)
                .filter(|e| e.value.is_some() && !e.hidden)
                .map(|_| Event::Deleted {
                    key: change.key.clone(),
                }),
        };
        let deleted_at = change.value.is_none().then_some(now);
        self.entries.insert(
            change.key,
            Entry {
                owner: change.owner,
                ltime: change.ltime,
                value: change.value,
                deleted_at,
                hidden: false,
            },
        );
        event
    }

    /// Everything this node holds of `network` (live entries and tombstones), for a bulk sync.
    pub fn bulk(&self, network: &str) -> Vec<Change> {
        self.entries
            .iter()
            .filter(|(k, e)| k.network == network && !e.hidden)
            .map(|(k, e)| Change {
                key: k.clone(),
                owner: e.owner.clone(),
                ltime: e.ltime,
                value: e.value.clone(),
            })
            .collect()
    }

    /// The node failed: its entries are hidden (not deleted: they come back if it does).
    pub fn node_failed(&mut self, node: &str) -> Vec<Event> {
        let mut events = Vec::new();
        for (k, e) in self
            .entries
            .iter_mut()
            .filter(|(_, e)| e.owner == node && !e.hidden)
        {
            e.hidden = true;
            if e.value.is_some() {
                events.push(Event::Deleted { key: k.clone() });
            }
        }
        events
    }

    /// Whether entries of `node` are hidden here (it failed, and they wait for its return).
    pub fn hides_entries_of(&self, node: &str) -> bool {
        self.entries.values().any(|e| e.owner == node && e.hidden)
    }

    /// The node is back before its entries were reaped: they show again.
    pub fn node_recovered(&mut self, node: &str) -> Vec<Event> {
        let mut events = Vec::new();
        for (k, e) in self
            .entries
            .iter_mut()
            .filter(|(_, e)| e.owner == node && e.hidden)
        {
            e.hidden = false;
            if let Some(value) = &e.value {
                events.push(Event::Put {
                    key: k.clone(),
                    owner: node.to_owned(),
                    value: value.clone(),
                });
            }
        }
        events
    }

    /// Reaps tombstones older than the grace period (and the hidden entries of a node
    /// that failed that long ago: `failed_since` says since when each failed node is down).
    pub fn reap(&mut self, now: Timestamp, failed_since: &BTreeMap<String, Timestamp>) {
        let grace = self.grace;
        self.entries.retain(|_, e| {
            let tombstone_old = e.deleted_at.is_some_and(|at| elapsed(now, at) >= grace);
            let owner_gone = e.hidden
                && failed_since
                    .get(&e.owner)
                    .is_some_and(|at| elapsed(now, *at) >= grace);
            !(tombstone_old || owner_gone)
        });
    }

    /// A live, visible entry.
    pub fn get(&self, key: &Key) -> Option<(&str, &[u8])> {
        let e = self.entries.get(key)?;
        if e.hidden {
            return None;
        }
        e.value.as_deref().map(|v| (e.owner.as_str(), v))
    }

    /// Every live, visible entry: key, owner, value.
    pub fn visible(&self) -> impl Iterator<Item = (&Key, &str, &[u8])> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.hidden)
            .filter_map(|(k, e)| e.value.as_deref().map(|v| (k, e.owner.as_str(), v)))
    }

    /// How many entries (tombstones included) this node stores: what a node off a network
    /// must not hold.
    pub fn stored(&self) -> usize {
        self.entries.len()
    }
}
