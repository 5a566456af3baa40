//! What NetworkDB's layer puts in memberlist user messages (UDP), push/pull user state and
//! stream user messages (TCP): postcard-encoded, behind a two-byte prefix that tells them from
//! a Serf agent's user messages (a type byte 0–9 then msgpack), which share the cluster.

use serde::{Deserialize, Serialize};

use crate::gossip::tables::{Attachment, Change, Key};

/// The prefix of every message of ours: a marker no Serf message type uses, and a version.
const PREFIX: [u8; 2] = [0x5e, 1];

/// One table entry of one network, as it travels (the network is said once per batch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    pub table: String,
    pub key: String,
    pub owner: String,
    pub ltime: u64,
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetMessage {
    /// A node joined or left a network: cluster-wide, on membership's broadcasts.
    Attachment(Attachment),
    /// Table changes of one network, gossiped to that network's peers only.
    Changes {
        network: String,
        entries: Vec<WireEntry>,
    },
    /// Everything this node holds of `networks` and its own attachments, over a stream;
    /// `reply`: answer with the same of ours.
    BulkSync {
        /// The sender's node name.
        from: String,
        networks: Vec<String>,
        entries: Vec<(String, WireEntry)>,
        attachments: Vec<Attachment>,
        reply: bool,
    },
    /// Push/pull user state: the attachments known.
    Attachments(Vec<Attachment>),
}

/// Why a payload is not one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not our prefix: another layer's message (a Serf agent's), ignored.
    Foreign,
    /// Our prefix, but the rest does not decode.
    Malformed,
}

impl DecodeError {
    pub fn kind(self) -> &'static str {
        match self {
            DecodeError::Foreign => "foreign user message",
            DecodeError::Malformed => "malformed table message",
        }
    }
}

impl NetMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = PREFIX.to_vec();
        // Serializing owned strings, bytes and integers into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<NetMessage, DecodeError> {
        let body = bytes.strip_prefix(&PREFIX).ok_or(DecodeError::Foreign)?;
        postcard::from_bytes(body).map_err(|_| DecodeError::Malformed)
    }

    /// The network a message's table data belongs to (what a node off that network must
    /// never receive), if it carries any.
    pub fn networks(&self) -> Vec<&str> {
        match self {
            NetMessage::Changes { network, .. } => vec![network.as_str()],
            NetMessage::BulkSync { networks, .. } => networks.iter().map(String::as_str).collect(),
            NetMessage::Attachment(_) | NetMessage::Attachments(_) => Vec::new(),
        }
    }
}

impl WireEntry {
    pub fn from_change(change: Change) -> (String, WireEntry) {
        (
            change.key.network,
            WireEntry {
                table: change.key.table,
                key: change.key.key,
                owner: change.owner,
                ltime: change.ltime,
                value: change.value,
            },
        )
    }

    pub fn into_change(self, network: String) -> Change {
        Change {
            key: Key {
                network,
                table: self.table,
                key: self.key,
            },
            owner: self.owner,
            ltime: self.ltime,
            value: self.value,
        }
    }

    /// Its encoded size within a batch (what the packet budget counts).
    pub fn encoded_len(&self) -> usize {
        postcard::to_allocvec(self).map_or(usize::MAX / 2, |v| v.len())
    }
}
