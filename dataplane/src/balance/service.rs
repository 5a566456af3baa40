//! A VIP's service on one network: its backends, their state and connection counts, and the
//! algorithm that picks a backend for a new flow.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::maglev::{MaglevTable, stable_hash};
use crate::types::Vni;

/// How a new flow's backend is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each backend in turn (Docker's IPVS `rr`).
    #[default]
    RoundRobin,
    /// The backend with the fewest open flows; ties in turn.
    LeastConnections,
    /// Consistent hashing of the flow: every node picks the same backend for the same flow,
    /// and a backend set change moves few flows.
    Maglev,
    /// Two backends drawn at random, the one with fewer open flows wins.
    TwoChoices,
}

/// Whether a backend takes new flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Running and healthy: new flows may go there.
    #[default]
    Active,
    /// Stopping: keeps the flows it has, gets no new ones.
    Draining,
}

/// A backend as an update names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub state: BackendState,
}

/// A service's VIP on one network and its backends, as an update gives it (whole).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub vni: Vni,
    pub vip: Ipv4Addr,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
}

/// A backend with its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub state: BackendState,
    /// Flows open now (not closing).
    pub active: u32,
    /// Flows ever given to it.
    pub total: u64,
}

/// A VIP's live state.
#[derive(Clone, Debug)]
pub struct VipService {
    pub vni: Vni,
    pub vip: Ipv4Addr,
    pub algorithm: Algorithm,
    pub backends: Vec<Backend>,
    /// Maglev over the active backends: table index → index into `backends`.
    maglev: MaglevTable,
    maglev_backends: Vec<usize>,
    /// Where round-robin (and least-connections' tie-break) continues.
    cursor: usize,
}

impl VipService {
    /// The service for `spec`, keeping the counters of backends `previous` already had.
    pub fn new(spec: &ServiceSpec, previous: Option<&VipService>) -> VipService {
        let backends = spec
            .backends
            .iter()
            .map(|b| {
                let known = previous.and_then(|p| p.backends.iter().find(|o| o.ip == b.ip));
                Backend {
                    ip: b.ip,
                    state: b.state,
                    active: known.map_or(0, |o| o.active),
                    total: known.map_or(0, |o| o.total),
                }
            })
            .collect();
        let mut service = VipService {
            vni: spec.vni,
            vip: spec.vip,
            algorithm: spec.algorithm,
            backends,
            maglev: MaglevTable::build(&[]),
            maglev_backends: Vec::new(),
            cursor: previous.map_or(0, |p| p.cursor),
        };
        service.rebuild_maglev();
        service
    }

    fn rebuild_maglev(&mut self) {
        self.maglev_backends = self.eligible().collect();
        let keys: Vec<u64> = self
            .maglev_backends
            .iter()
            .map(|&i| u64::from(u32::from(self.backends[i].ip)))
            .collect();
        self.maglev = MaglevTable::build(&keys);
    }

    /// Indexes of the backends that take new flows.
    fn eligible(&self) -> impl Iterator<Item = usize> + '_ {
        self.backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.state == BackendState::Active)
            .map(|(i, _)| i)
    }

    /// [`eligible`](Self::eligible) without the client itself.
    fn eligible_for(&self, client: Ipv4Addr) -> impl Iterator<Item = usize> + '_ {
        self.eligible()
            .filter(move |&i| self.backends[i].ip != client)
    }

    pub fn has_eligible(&self) -> bool {
        self.eligible().next().is_some()
    }

    /// Picks the backend of a new flow from `client`. `flow_hash` is the flow's stable hash;
    /// `random` a fresh random number (for two-choices). `None` when no backend takes new
    /// flows.
    ///
    /// A client is never its own backend: a task connecting to its own service's VIP would
    /// get its own packet back with its own source address, which its kernel drops (Docker's
    /// IPVS has the same hole). Another task serves it; if it is the only one, it is refused.
    pub fn pick(&mut self, client: Ipv4Addr, flow_hash: u64, random: u64) -> Option<usize> {
        let n = self.backends.len();
        let picked = match self.algorithm {
            Algorithm::RoundRobin => self.next_in_turn(|b| b.ip != client),
            Algorithm::LeastConnections => {
                let least = self
                    .eligible_for(client)
                    .map(|i| self.backends[i].active)
                    .min()?;
                self.next_in_turn(|b| b.active == least && b.ip != client)
            }
            Algorithm::Maglev => {
                // Probing other hashes of the same flow keeps the choice the same on every node.
                (0..=MAGLEV_PROBES).find_map(|k: u64| {
                    let hash = flow_hash ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let slot = self.maglev.lookup(hash)?;
                    let i = *self.maglev_backends.get(slot)?;
                    (self.backends[i].ip != client).then_some(i)
                })
            }
            Algorithm::TwoChoices => {
                let eligible: Vec<usize> = self.eligible_for(client).collect();
                let len = eligible.len() as u64;
                let first = *eligible.get(usize::try_from(random % len.max(1)).ok()?)?;
                let second = if len > 1 {
                    // A second, distinct draw from the high bits.
                    let skip = 1 + (random >> 32) % (len - 1);
                    let at = usize::try_from((random % len + skip) % len).ok()?;
                    eligible[at]
                } else {
                    first
                };
                let active = |i: usize| self.backends[i].active;
                Some(if active(second) < active(first) {
                    second
                } else {
                    first
                })
            }
        }?;
        debug_assert!(picked < n);
        let backend = self.backends.get_mut(picked)?;
        backend.active += 1;
        backend.total += 1;
        Some(picked)
    }

    /// The next eligible backend after the cursor that `fits`, advancing the cursor past it.
    fn next_in_turn(&mut self, fits: impl Fn(&Backend) -> bool) -> Option<usize> {
        let n = self.backends.len();
        (0..n)
            .map(|step| (self.cursor + step) % n)
            .find(|&i| {
                let b = &self.backends[i];
                b.state == BackendState::Active && fits(b)
            })
            .inspect(|&i| self.cursor = (i + 1) % n)
    }

    /// A flow of backend `ip` closed (or was evicted): one fewer open flow.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(b) = self.backends.iter_mut().find(|b| b.ip == ip) {
            b.active = b.active.saturating_sub(1);
        }
    }

    pub fn backend(&self, ip: Ipv4Addr) -> Option<&Backend> {
        self.backends.iter().find(|b| b.ip == ip)
    }
}

/// How many other hashes Maglev tries when a flow's first choice is its own client.
const MAGLEV_PROBES: u64 = 32;

/// The hash a flow is balanced by: the same on every node (Maglev's promise).
pub fn flow_hash(key_bytes: &[u8]) -> u64 {
    stable_hash(0x5348_4f41_4c5f_4c42, key_bytes) // "SHOAL_LB"
}
