//! Which node is attached to which network, cluster-wide (NetworkDB's `networks[node][nid]`):
//! each record is stamped with its node's Lamport time, the newer one wins; a node is the
//! authority on its own attachments, so a record about us that says otherwise (a stale one
//! from before a restart) is answered with ours, stamped newer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node joined (`attached`) or left a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub node: String,
    pub network: String,
    pub ltime: u64,
    pub attached: bool,
}

#[derive(Debug, Default)]
pub struct Attachments {
    clock: u64,
    /// network → node → (ltime, attached)
    records: BTreeMap<String, BTreeMap<String, (u64, bool)>>,
}

impl Attachments {
    /// Our own join (`attached`) or leave of `network`, stamped for broadcast.
    pub fn announce(&mut self, me: &str, network: &str, attached: bool) -> Attachment {
        let have = self.ltime(network, me);
        self.clock = self.clock.max(have) + 1;
        self.records
            .entry(network.to_owned())
            .or_default()
            .insert(me.to_owned(), (self.clock, attached));
        Attachment {
            node: me.to_owned(),
            network: network.to_owned(),
            ltime: self.clock,
            attached,
        }
    }

    fn ltime(&self, network: &str, node: &str) -> u64 {
        self.records
            .get(network)
            .and_then(|n| n.get(node))
            .map_or(0, |r| r.0)
    }

    /// A record from the network. Returns whether it changed anything, and, for a stale
    /// record about us (`me`, whose truth is `ours`), the correction to broadcast.
    pub fn apply(
        &mut self,
        me: &str,
        ours: impl Fn(&str) -> bool,
        record: Attachment,
    ) -> (bool, Option<Attachment>) {
        self.clock = self.clock.max(record.ltime);
        if record.ltime <= self.ltime(&record.network, &record.node) {
            return (false, None);
        }
        if record.node == me {
            let truth = ours(&record.network);
            if truth != record.attached {
                return (false, Some(self.announce(me, &record.network, truth)));
            }
        }
        let changed = self.attached(&record.network, &record.node) != record.attached;
        self.records
            .entry(record.network)
            .or_default()
            .insert(record.node, (record.ltime, record.attached));
        (changed, None)
    }

    pub fn attached(&self, network: &str, node: &str) -> bool {
        self.records
            .get(network)
            .and_then(|n| n.get(node))
            .is_some_and(|r| r.1)
    }

    /// The nodes attached to `network`.
    pub fn nodes<'a>(&'a self, network: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.records
            .get(network)
            .into_iter()
            .flat_map(|n| n.iter().filter(|(_, r)| r.1).map(|(node, _)| node.as_str()))
    }

    /// `node`'s records (joins and leaves) of every network.
    pub fn of_node(&self, node: &str) -> Vec<Attachment> {
        self.records
            .iter()
            .filter_map(|(network, nodes)| {
                nodes.get(node).map(|(ltime, attached)| Attachment {
                    node: node.to_owned(),
                    network: network.clone(),
                    ltime: *ltime,
                    attached: *attached,
                })
            })
            .collect()
    }

    /// Every record (joins and leaves), for a push/pull.
    pub fn all(&self) -> Vec<Attachment> {
        self.records
            .iter()
            .flat_map(|(network, nodes)| {
                nodes.iter().map(|(node, (ltime, attached))| Attachment {
                    node: node.clone(),
                    network: network.clone(),
                    ltime: *ltime,
                    attached: *attached,
                })
            })
            .collect()
    }
}
