//! Network-scoped tables, Docker's NetworkDB semantics, sans-IO: entries `(table, network,
//! key) → value`, each owned by the node that wrote it and stamped with a Lamport time; the
//! newer stamp wins everywhere; deletes are tombstones reaped after a grace period; only nodes
//! attached to a network store its entries; a failed node's entries are hidden and come back
//! if it returns before they are reaped. The shell carries [`Change`]s in gossip user messages
//! and bulk syncs ([`Tables::bulk`]); a watch of [`Event`]s feeds the dataplane and DNS.

#[cfg(test)]
mod tests;

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
    attached: BTreeMap<String, BTreeSet<String>>,
    entries: BTreeMap<Key, Entry>,
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
            attached: BTreeMap::new(),
            entries: BTreeMap::new(),
        }
    }

    fn tick(&mut self, seen: u64) -> u64 {
        self.clock = self.clock.max(seen) + 1;
        self.clock
    }

    /// Attaches this node to a network: from now on it stores the network's entries (a bulk
    /// sync with its members fills them in).
    pub fn join_network(&mut self, network: &str) {
        self.networks.insert(network.to_owned());
        self.attached
            .entry(network.to_owned())
            .or_default()
            .insert(self.me.clone());
    }

    /// Leaves a network: its entries are forgotten here, ours are deleted everywhere.
    pub fn leave_network(&mut self, now: Timestamp, network: &str) -> (Vec<Change>, Vec<Event>) {
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
        let events = self
            .entries
            .iter()
            .filter(|(k, e)| k.network == network && e.value.is_some() && !e.hidden)
            .map(|(k, _)| Event::Deleted { key: k.clone() })
            .collect();
        self.entries.retain(|k, _| k.network != network);
        self.networks.remove(network);
        if let Some(nodes) = self.attached.get_mut(network) {
            nodes.remove(&self.me);
        }
        (changes, events)
    }

    /// Another node's membership of a network (from its announcements).
    pub fn node_joined_network(&mut self, node: &str, network: &str) {
        self.attached
            .entry(network.to_owned())
            .or_default()
            .insert(node.to_owned());
    }

    pub fn node_left_network(&mut self, node: &str, network: &str) {
        if let Some(nodes) = self.attached.get_mut(network) {
            nodes.remove(node);
        }
    }

    /// The nodes a network's changes go to (its members but us): only they store them.
    pub fn peers_of(&self, network: &str) -> Vec<String> {
        self.attached
            .get(network)
            .map(|n| n.iter().filter(|n| **n != self.me).cloned().collect())
            .unwrap_or_default()
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
        let event = self.apply(now, change.clone());
        Some((change, event))
    }

    /// A change from the network: applied if it is newer than what we have (by Lamport time,
    /// the owner's name breaking ties) and we are on its network. Returns the event, if any.
    pub fn apply(&mut self, now: Timestamp, change: Change) -> Option<Event> {
        if !self.networks.contains(&change.key.network) {
            return None;
        }
        self.clock = self.clock.max(change.ltime);
        if let Some(have) = self.entries.get(&change.key)
            && (have.ltime, &have.owner) >= (change.ltime, &change.owner)
        {
            return None;
        }
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

    /// How many entries (tombstones included) this node stores: what a node off a network
    /// must not hold.
    pub fn stored(&self) -> usize {
        self.entries.len()
    }
}
