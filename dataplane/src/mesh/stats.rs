//! Per-published-port counters, shared by the relay tasks.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::PublishedPort;

#[derive(Debug, Default)]
pub struct PortCounters {
    pub active: AtomicU64,
    pub total: AtomicU64,
    /// The backend did not accept (refused, or no answer within the connect timeout).
    pub connect_failed: AtomicU64,
    /// Closed at once: the port's flow limit was reached.
    pub over_limit: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A reading of one port's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortStats {
    pub port: PublishedPort,
    pub active: u64,
    pub total: u64,
    pub connect_failed: u64,
    pub over_limit: u64,
    /// Client to task.
    pub bytes_in: u64,
    /// Task to client.
    pub bytes_out: u64,
}

impl PortCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, port: &PublishedPort) -> PortStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PortStats {
            port: port.clone(),
            active: get(&self.active),
            total: get(&self.total),
            connect_failed: get(&self.connect_failed),
            over_limit: get(&self.over_limit),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
        }
    }
}

/// Counts a flow open while it lives.
#[derive(Debug)]
pub struct ActiveGuard<'a>(&'a AtomicU64);

impl<'a> ActiveGuard<'a> {
    pub fn new(active: &'a AtomicU64) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(active)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
