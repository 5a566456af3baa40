//! Lifeguard's suspicion timer (memberlist `suspicion.go`): it starts at `max` and shrinks
//! toward `min` with each independent confirmation, `k` of which are expected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dataplane::types::Timestamp;

use super::Config;
use crate::gossip::deadlines::Deadlines;

#[derive(Debug, Clone)]
pub struct Suspicion {
    start: Timestamp,
    min: Duration,
    max: Duration,
    k: u32,
    confirmations: BTreeSet<String>,
}

impl Suspicion {
    /// For a cluster of `n` live members, started by `from`. Fewer than `k + 2` members
    /// cannot confirm independently: the timeout is then `min` at once.
    pub fn new(config: &Config, n: usize, now: Timestamp, from: &str) -> Self {
        // memberlist: min = mult · max(1, log10(n)) · interval; max = max_mult · min.
        let scale = (n.max(1) as f64).log10().max(1.0);
        let min = config
            .probe_interval
            .mul_f64(f64::from(config.suspicion_mult) * scale);
        let max = min * config.suspicion_max_timeout_mult;
        let k = config.suspicion_mult.saturating_sub(2);
        let mut confirmations = BTreeSet::new();
        // The node that raised it is the first voice, not a confirmation.
        confirmations.insert(from.to_owned());
        Self {
            start: now,
            min,
            max,
            k: if n.saturating_sub(2) < k as usize {
                0
            } else {
                k
            },
            confirmations,
        }
    }

    /// Records a confirmation from `from`; true if it was new (then it is worth passing on).
    pub fn confirm(&mut self, from: &str) -> bool {
        if self.confirmations.len() as u32 > self.k {
            return false;
        }
        self.confirmations.insert(from.to_owned())
    }

    pub fn timeout(&self) -> Duration {
        let c = self.confirmations.len().saturating_sub(1) as f64;
        if self.k == 0 {
            return self.min;
        }
        let fraction = (c + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let shrunk = self.max.as_secs_f64() - (self.max - self.min).as_secs_f64() * fraction;
        Duration::from_secs_f64(shrunk.max(self.min.as_secs_f64()))
    }

    /// When it expires, as things stand.
    pub fn deadline(&self) -> Timestamp {
        super::add(self.start, self.timeout())
    }
}

/// The running suspicions by member, with their deadlines in time order.
#[derive(Debug, Default)]
pub struct Suspicions {
    by_node: BTreeMap<String, Suspicion>,
    deadlines: Deadlines,
}

impl Suspicions {
    /// Starts (or restarts) the suspicion of `node`.
    pub fn insert(&mut self, node: String, suspicion: Suspicion) {
        self.deadlines.insert(node.clone(), suspicion.deadline());
        self.by_node.insert(node, suspicion);
    }

    /// Ends the suspicion of `node`, if any.
    pub fn remove(&mut self, node: &str) {
        self.by_node.remove(node);
        self.deadlines.remove(node);
    }

    /// A confirmation of `node`'s suspicion from `from`: true if it was new (its deadline
    /// then comes sooner). False if there is no such suspicion.
    pub fn confirm(&mut self, node: &str, from: &str) -> bool {
        let Some(s) = self.by_node.get_mut(node) else {
            return false;
        };
        if !s.confirm(from) {
            return false;
        }
        self.deadlines.insert(node.to_owned(), s.deadline());
        true
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.next()
    }

    /// The members whose suspicion expired by `now`, their suspicions ended.
    pub fn take_expired(&mut self, now: Timestamp) -> Vec<String> {
        let expired = self.deadlines.take_overdue(now);
        for node in &expired {
            self.by_node.remove(node);
        }
        expired
    }
}
