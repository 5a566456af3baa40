//! The overlay peer table (Docker's `overlay_peer_table`), sans-IO: each node writes one entry
//! per local endpoint into its network's gossip table (key: the endpoint id; value: its
//! address, MAC and the node's underlay address); every other node of the network turns the
//! table's events into the dataplane's remote-endpoint updates.
//!
//! Like libnetwork's `peerMap` (a set per IP), transient duplicates are tolerated: when an IP
//! moves between endpoints (a task rescheduled, its old node not yet failed), the entries of
//! both are kept, the newest one is programmed, and when it goes the next one is programmed
//! again — no window where a live endpoint has no route.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::gossip::tables::{self, Key};
use dataplane::forward::Update;
use dataplane::types::{Mac, UnderlayAddr, Vni};

/// The gossip table the records live in.
pub const PEER_TABLE: &str = "overlay_peer_table";

/// One endpoint, as its node announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The owning node's overlay socket (VXLAN's tunnel endpoint).
    pub node: SocketAddr,
}

impl PeerRecord {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of fixed-size fields always serializes.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<PeerRecord> {
        postcard::from_bytes(bytes).ok()
    }

    /// The table key and value this node writes for a local endpoint.
    pub fn entry(network: &str, endpoint: &str, record: &PeerRecord) -> (Key, Vec<u8>) {
        (
            Key {
                network: network.to_owned(),
                table: PEER_TABLE.to_owned(),
                key: endpoint.to_owned(),
            },
            record.encode(),
        )
    }
}

/// Why an event was not turned into an update.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peer entry {0:?}: its value is not a peer record (a newer or broken writer): ignored")]
    Malformed(Key),
    #[error("peer entry {0:?}: network not attached on this node: ignored")]
    UnknownNetwork(Key),
}

#[derive(Debug, Default)]
pub struct PeerTable {
    /// (network, endpoint) → record: everything the table holds, in arrival order per IP.
    records: BTreeMap<(String, String), (u64, PeerRecord)>,
    /// (network, ip) → the endpoint whose record is programmed.
    programmed: BTreeMap<(String, Ipv4Addr), String>,
    arrivals: u64,
}

impl PeerTable {
    /// A table event (of any table: others are ignored) into dataplane updates. `vni_of`
    /// maps the networks this node is attached to; `me` is this node's overlay socket (our
    /// own endpoints are local, not remote).
    pub fn on_event(
        &mut self,
        event: &tables::Event,
        vni_of: impl Fn(&str) -> Option<Vni>,
        me: SocketAddr,
    ) -> Result<Vec<Update>, PeerError> {
        let key = match event {
            tables::Event::Put { key, .. } | tables::Event::Deleted { key } => key,
        };
        if key.table != PEER_TABLE {
            return Ok(Vec::new());
        }
        let vni = vni_of(&key.network).ok_or_else(|| PeerError::UnknownNetwork(key.clone()))?;
        let id = (key.network.clone(), key.key.clone());
        let mut updates = Vec::new();
        // Whatever this endpoint had before goes first (its IP may have changed).
        if let Some((_, old)) = self.records.remove(&id) {
            self.unprogram(&id, old, vni, me, &mut updates);
        }
        if let tables::Event::Put { value, .. } = event {
            let record =
                PeerRecord::decode(value).ok_or_else(|| PeerError::Malformed(key.clone()))?;
            self.arrivals += 1;
            self.records.insert(id.clone(), (self.arrivals, record));
            if record.node != me {
                let slot = (key.network.clone(), record.ip);
                if let Some(previous) = self.programmed.insert(slot, key.key.clone())
                    && previous != key.key
                {
                    // Replaced in place: the dataplane takes the new owner's route.
                    updates.push(Update::RemoveRemoteEndpoint { vni, ip: record.ip });
                }
                updates.push(add(vni, &record));
            }
        }
        Ok(updates)
    }

    /// `old` of endpoint `id` is gone: its route goes, and the next record with the same IP
    /// (the newest), if any, is programmed instead.
    fn unprogram(
        &mut self,
        id: &(String, String),
        old: PeerRecord,
        vni: Vni,
        me: SocketAddr,
        updates: &mut Vec<Update>,
    ) {
        let slot = (id.0.clone(), old.ip);
        if self.programmed.get(&slot) != Some(&id.1) {
            return;
        }
        self.programmed.remove(&slot);
        updates.push(Update::RemoveRemoteEndpoint { vni, ip: old.ip });
        let next = self
            .records
            .iter()
            .filter(|((network, _), (_, r))| *network == id.0 && r.ip == old.ip && r.node != me)
            .max_by_key(|(_, (arrival, _))| *arrival)
            .map(|((_, endpoint), (_, r))| (endpoint.clone(), *r));
        if let Some((endpoint, record)) = next {
            self.programmed.insert(slot, endpoint);
            updates.push(add(vni, &record));
        }
    }
}

fn add(vni: Vni, r: &PeerRecord) -> Update {
    Update::AddRemoteEndpoint {
        vni,
        ip: r.ip,
        mac: Mac(r.mac),
        node: UnderlayAddr(r.node),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ME: &str = "192.168.1.1:4789";

    fn vni(network: &str) -> Option<Vni> {
        (network == "blue").then(|| Vni::try_from(4096).unwrap())
    }

    fn put(endpoint: &str, ip: [u8; 4], node: &str) -> tables::Event {
        let record = PeerRecord {
            ip: Ipv4Addr::from(ip),
            mac: [2, 0x42, ip[0], ip[1], ip[2], ip[3]],
            node: node.parse().unwrap(),
        };
        let (key, value) = PeerRecord::entry("blue", endpoint, &record);
        tables::Event::Put {
            key,
            owner: "n".into(),
            value,
        }
    }

    fn deleted(endpoint: &str) -> tables::Event {
        tables::Event::Deleted {
            key: Key {
                network: "blue".into(),
                table: PEER_TABLE.into(),
                key: endpoint.into(),
            },
        }
    }

    fn run(t: &mut PeerTable, e: &tables::Event) -> Vec<Update> {
        t.on_event(e, vni, ME.parse().unwrap()).unwrap()
    }

    fn adds_to(updates: &[Update]) -> Vec<String> {
        updates
            .iter()
            .map(|u| match u {
                Update::AddRemoteEndpoint { ip, node, .. } => format!("+{ip}@{}", node.0),
                Update::RemoveRemoteEndpoint { ip, .. } => format!("-{ip}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn remote_endpoints_are_programmed_and_ours_are_not() {
        let mut t = PeerTable::default();
        assert_eq!(
            adds_to(&run(&mut t, &put("e1", [10, 0, 1, 5], "192.168.1.2:4789"))),
            ["+10.0.1.5@192.168.1.2:4789"]
        );
        assert!(run(&mut t, &put("e2", [10, 0, 1, 6], ME)).is_empty());
        assert_eq!(adds_to(&run(&mut t, &deleted("e1"))), ["-10.0.1.5"]);
        assert!(run(&mut t, &deleted("e2")).is_empty());
    }

    #[test]
    fn an_ip_moving_between_endpoints_keeps_a_route_all_along() {
        let mut t = PeerTable::default();
        run(&mut t, &put("old", [10, 0, 1, 5], "192.168.1.2:4789"));
        // The task is rescheduled: the same IP on a new endpoint of another node, before the
        // old node's entry is gone.
        assert_eq!(
            adds_to(&run(&mut t, &put("new", [10, 0, 1, 5], "192.168.1.3:4789"))),
            ["-10.0.1.5", "+10.0.1.5@192.168.1.3:4789"]
        );
        // The old entry goes: nothing changes for the new one.
        assert!(run(&mut t, &deleted("old")).is_empty());
        // Had the new one gone first, the old one would have been programmed back.
        run(&mut t, &put("old", [10, 0, 1, 5], "192.168.1.2:4789"));
        assert_eq!(
            adds_to(&run(&mut t, &deleted("old"))),
            ["-10.0.1.5", "+10.0.1.5@192.168.1.3:4789"]
        );
    }

    #[test]
    fn an_endpoint_changing_address_moves_its_route() {
        let mut t = PeerTable::default();
        run(&mut t, &put("e", [10, 0, 1, 5], "192.168.1.2:4789"));
        assert_eq!(
            adds_to(&run(&mut t, &put("e", [10, 0, 1, 9], "192.168.1.2:4789"))),
            ["-10.0.1.5", "+10.0.1.9@192.168.1.2:4789"]
        );
    }

    #[test]
    fn bad_values_and_unknown_networks_are_refused_with_the_entry_named() {
        let mut t = PeerTable::default();
        let bad = tables::Event::Put {
            key: Key {
                network: "blue".into(),
                table: PEER_TABLE.into(),
                key: "e".into(),
            },
            owner: "n".into(),
            value: vec![1, 2],
        };
        let err = t.on_event(&bad, vni, ME.parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a peer record"), "{err}");
        let mut red = put("e", [10, 0, 1, 5], "192.168.1.2:4789");
        if let tables::Event::Put { key, .. } = &mut red {
            key.network = "red".into();
        }
        assert!(matches!(
            t.on_event(&red, vni, ME.parse().unwrap()),
            Err(PeerError::UnknownNetwork(_))
        ));
        // Other tables are not ours to read.
        let other = tables::Event::Deleted {
            key: Key {
                network: "red".into(),
                table: "services".into(),
                key: "x".into(),
            },
        };
        assert!(
            t.on_event(&other, vni, ME.parse().unwrap())
                .unwrap()
                .is_empty()
        );
    }
}
