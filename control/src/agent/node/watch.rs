//! The gossip tables into the dataplane and the resolver: every table change this node
//! hears (its own writes included) goes through the peer table (remote endpoints) and the
//! service table (VIPs, backends, names). Runs on its own thread until the gossip node stops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use crate::agent::peers::PeerTable;
use crate::agent::services::ServiceTable;
use crate::gossip::shell::Watched;

use super::Shared;

/// What the glue refused or failed to apply, counted (status and metrics show them).
#[derive(Debug, Default)]
pub struct GlueCounters {
    pub table_events: AtomicU64,
    /// Entries the peer or service table refused (malformed, off-network), by kind.
    pub refused: AtomicU64,
    /// Updates the dataplane or the resolver refused.
    pub failed: AtomicU64,
}

/// Applies table events until the gossip node's watch channel closes.
pub(crate) fn run(shared: &Shared, events: Receiver<Watched>) {
    let mut peers = PeerTable::default();
    let mut services = ServiceTable::default();
    let counters = &shared.glue;
    for watched in events {
        let Watched::Table(event) = watched else {
            continue;
        };
        counters.table_events.fetch_add(1, Ordering::Relaxed);
        let vnis: BTreeMap<String, dataplane::types::Vni> = shared.vnis();
        let vni_of = |network: &str| vnis.get(network).copied();
        let mut dataplane = Vec::new();
        let mut dns = Vec::new();
        match peers.on_event(&event, vni_of, shared.overlay) {
            Ok(updates) => dataplane.extend(updates),
            Err(e) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{e}");
            }
        }
        match services.on_event(&event, vni_of, shared.config.algorithm) {
            Ok(updates) => {
                dataplane.extend(updates.dataplane);
                dns.extend(updates.dns);
            }
            Err(e) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{e}");
            }
        }
        for update in dataplane {
            let applied = shared.dataplane.apply(update.clone());
            if !matches!(applied, Ok(Ok(()))) {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?update, ?applied, "dataplane refused a table update");
            }
        }
        for update in dns {
            if let Err(e) = shared.dns.apply(update) {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("resolver refused a table update: {e}");
            }
        }
    }
}
