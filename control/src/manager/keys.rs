//! Key sets of encrypted networks and their hitless rotation (DESIGN.md "Wire formats"):
//! a new key goes to every node attached to the network for receiving only; once every one
//! of them has acknowledged it, it becomes the key they send with; the key before the previous
//! one is dropped. Key bytes come in with the command (the shell draws them), never from here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// 32 key bytes. Debug never prints them.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBytes(pub [u8; 32]);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(..)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub epoch: u32,
    pub key: KeyBytes,
    /// Nodes that said they hold it.
    pub acked: BTreeSet<String>,
}

/// One encrypted network's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Oldest first; at most three (the one before, the one in use, the new one).
    pub epochs: Vec<Epoch>,
    /// The epoch nodes send with; `None` until the first key is held everywhere.
    pub tx: Option<u32>,
}

impl KeySet {
    /// Adds a key for receiving. Returns its epoch.
    pub fn rotate(&mut self, key: KeyBytes) -> u32 {
        let epoch = self.epochs.last().map_or(1, |e| e.epoch + 1);
        self.epochs.push(Epoch {
            epoch,
            key,
            acked: BTreeSet::new(),
        });
        epoch
    }

    /// `node` holds `epoch`.
    pub fn ack(&mut self, node: &str, epoch: u32) {
        if let Some(e) = self.epochs.iter_mut().find(|e| e.epoch == epoch) {
            e.acked.insert(node.to_owned());
        }
    }

    /// Once every attached node holds the newest key, it becomes the sending key and the one
    /// before the previous is dropped. Returns whether anything changed.
    pub fn settle(&mut self, attached: &BTreeSet<String>) -> bool {
        let Some(newest) = self.epochs.last() else {
            return false;
        };
        if self.tx == Some(newest.epoch) || !attached.iter().all(|n| newest.acked.contains(n)) {
            return false;
        }
        let previous = self.tx;
        self.tx = Some(newest.epoch);
        if let Some(previous) = previous {
            self.epochs.retain(|e| e.epoch >= previous);
        }
        true
    }
}

/// Key sets per network id.
pub type Keys = BTreeMap<String, KeySet>;
