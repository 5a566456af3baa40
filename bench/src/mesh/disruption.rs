//! Maglev disruption: with ten backends, remove one and count the flows that change backend.
//! Ideal: exactly the removed backend's flows move (1/10), none of the others.
//!
//! Two ways, both reported:
//!
//! - **end to end** (the figure `maglev_disruption`): a second VIP balances all ten tasks with
//!   Maglev. From c3 (on n1), `flows` connections each from its own fixed source port go through n1's
//!   dataplane and record which task answered; then t10 leaves the service (on every node) and
//!   the same source ports connect again (same 5-tuples, so the same flow hashes). Flows that
//!   now reach another task moved. A connection refused in the second round is retried once
//!   and counted (a new SYN on a port whose previous, finished flow went to the removed task).
//! - **computed**: `dataplane::balance::VipService` itself, no network: the same ten task
//!   addresses, `synthetic` flows (64 client addresses × source ports, to the VIP:80), each
//!   removal of one of the ten in turn; plus `hash mod N` on the same flows as the reference a
//!   non-consistent hash gives.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::balance::flow::FlowKey;
use dataplane::balance::service::flow_hash;
use dataplane::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec, VipService};
use dataplane::types::Vni;

use super::client;
use super::lab::{Lab, TASKS};

/// Threads of the end-to-end rounds.
const THREADS: usize = 16;
/// The first fixed source port.
const BASE_PORT: u16 = 20_000;

/// The end-to-end measurement.
#[derive(Clone, Debug, Default)]
pub(super) struct EndToEnd {
    pub flows: usize,
    pub removed: String,
    /// Flows answered in both rounds.
    pub compared: usize,
    /// Of those, answered by another task in round 2.
    pub moved: usize,
    /// Of those, the ones whose first task is still in the service (ideal: none).
    pub moved_from_survivors: usize,
    /// Flows of the removed task in round 1.
    pub on_removed: usize,
    /// Round 1 answers by task.
    pub before: BTreeMap<String, usize>,
    /// Round 2 answers by task.
    pub after: BTreeMap<String, usize>,
    /// Round 2 connections that failed at first (by reason), then were retried once.
    pub round2_first_errors: BTreeMap<String, usize>,
    /// Failed in round 1, or in round 2 after the retry.
    pub failed: usize,
}

impl EndToEnd {
    pub(super) fn fraction(&self) -> f64 {
        ratio(self.moved, self.compared)
    }

    pub(super) fn survivors_fraction(&self) -> f64 {
        ratio(self.moved_from_survivors, self.compared)
    }
}

/// The computation.
#[derive(Clone, Debug, Default)]
pub(super) struct Computed {
    pub backends: usize,
    pub flows: usize,
    /// Per removed backend: fraction of all flows that moved.
    pub moved: Vec<f64>,
    /// Per removed backend: fraction of all flows that moved between surviving backends.
    pub moved_from_survivors: Vec<f64>,
    /// Per removed backend, `hash mod N` → `hash mod (N-1)`: fraction of flows that moved.
    pub mod_n_moved: Vec<f64>,
    /// Each backend's share of the flows with all ten (Maglev).
    pub shares: Vec<f64>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// The end-to-end measurement through the lab's Maglev VIP. Leaves the VIP with all ten tasks.
#[allow(clippy::disallowed_methods)] // bench: reads the clock
pub(super) fn end_to_end(lab: &Lab, flows: usize) -> Result<EndToEnd, String> {
    let flows = flows.clamp(1, 40_000);
    let ports: Vec<u16> = (0..flows).map(|i| BASE_PORT + i as u16).collect();
    let removed = TASKS[TASKS.len() - 1];
    lab.set_maglev_service(TASKS.len())?;
    let first = round(lab, &ports).map_err(|e| format!("maglev round 1: {e}"))?;
    lab.set_maglev_service(TASKS.len() - 1)?;
    // The update reaches every node before `apply_everywhere` returns; a short pause anyway.
    std::thread::sleep(Duration::from_millis(200));
    let second = round(lab, &ports).map_err(|e| format!("maglev round 2: {e}"))?;
    let mut round2_first_errors: BTreeMap<String, usize> = BTreeMap::new();
    let retry: Vec<u16> = second
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| (*p, e)))
        .map(|(p, e)| {
            *round2_first_errors.entry(e.clone()).or_default() += 1;
            p
        })
        .collect();
    let retried = round(lab, &retry).map_err(|e| format!("maglev retry: {e}"))?;
    let mut second = second;
    second.extend(retried);
    lab.set_maglev_service(TASKS.len())?;

    let mut out = EndToEnd {
        flows,
        removed: removed.to_string(),
        round2_first_errors,
        ..EndToEnd::default()
    };
    for p in &ports {
        match (first.get(p), second.get(p)) {
            (Some(Ok(a)), Some(Ok(b))) => {
                out.compared += 1;
                *out.before.entry(a.clone()).or_default() += 1;
                *out.after.entry(b.clone()).or_default() += 1;
                if a == removed {
                    out.on_removed += 1;
                }
                if a != b {
                    out.moved += 1;
                    if a != removed {
                        out.moved_from_survivors += 1;
                    }
                }
            }
            _ => out.failed += 1,
        }
    }
    Ok(out)
}

type Answers = BTreeMap<u16, Result<String, String>>;

/// One connection per source port to the Maglev VIP from c3, [`THREADS`] at a time: the task
/// that answered each, or why it failed.
fn round(lab: &Lab, ports: &[u16]) -> io::Result<Answers> {
    let ports: Arc<Vec<(SocketAddrV4, SocketAddrV4)>> =
        Arc::new(ports.iter().map(|&p| lab.maglev_flow(p)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<Answers>> = Arc::new(Mutex::new(BTreeMap::new()));
    let mut handles = Vec::new();
    for _ in 0..THREADS.min(ports.len()) {
        let fd = lab.maglev_client_ns().open()?;
        let (ports, next, answers) = (ports.clone(), next.clone(), answers.clone());
        handles.push(
            std::thread::Builder::new()
                .name(client::THREAD_NAME.into())
                .spawn(move || -> io::Result<()> {
                    client::enter(fd)?;
                    let mut mine = Vec::new();
                    while let Some(&(src, dst)) = ports.get(next.fetch_add(1, Ordering::Relaxed)) {
                        #[allow(clippy::disallowed_methods)] // bench: reads the clock
                        let t0 = Instant::now();
                        let answer = client::connect_from(src, dst)
                            .map_err(|e| format!("connect: {}", client::kind(&e)))
                            .and_then(|s| client::exchange(s, t0))
                            .map(|(_, name)| name);
                        mine.push((src.port(), answer));
                    }
                    answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(mine);
                    Ok(())
                })?,
        );
    }
    for h in handles {
        h.join()
            .map_err(|_| io::Error::other("a maglev client thread panicked"))??;
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(answers)
}

/// Maglev's own disruption on `synthetic` flows, no network: each of the ten tasks' addresses
/// removed in turn.
pub(super) fn computed(
    vni: Vni,
    lab_ips: &[Ipv4Addr],
    vip: Ipv4Addr,
    synthetic: usize,
) -> Computed {
    let spec = |ips: &[Ipv4Addr]| ServiceSpec {
        vni,
        vip,
        algorithm: Algorithm::Maglev,
        backends: ips
            .iter()
            .map(|&ip| BackendSpec {
                ip,
                state: BackendState::Active,
            })
            .collect(),
    };
    // (client, flow hash) of every synthetic flow.
    let flows: Vec<(Ipv4Addr, u64)> = (0..synthetic)
        .map(|i| {
            let key = FlowKey {
                vni,
                proto: 6,
                src: Ipv4Addr::new(10, 255, 1, (i % 64) as u8),
                sport: 1024 + (i / 64) as u16,
                dst: vip,
                dport: 80,
            };
            (key.src, flow_hash(&key.to_bytes()))
        })
        .collect();
    let assign = |ips: &[Ipv4Addr]| -> Vec<Ipv4Addr> {
        let mut svc = VipService::new(&spec(ips), None);
        flows
            .iter()
            .map(|&(client, h)| {
                svc.pick(client, h, 0)
                    .map_or(Ipv4Addr::UNSPECIFIED, |i| svc.backends[i].ip)
            })
            .collect()
    };
    let all = assign(lab_ips);
    let n = lab_ips.len();
    let mut out = Computed {
        backends: n,
        flows: synthetic,
        shares: lab_ips
            .iter()
            .map(|ip| ratio(all.iter().filter(|a| *a == ip).count(), synthetic))
            .collect(),
        ..Computed::default()
    };
    for removed in lab_ips {
        let rest: Vec<Ipv4Addr> = lab_ips.iter().copied().filter(|ip| ip != removed).collect();
        let after = assign(&rest);
        let moved = all.iter().zip(&after).filter(|(a, b)| a != b).count();
        let survivors = all
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b && *a != removed)
            .count();
        out.moved.push(ratio(moved, synthetic));
        out.moved_from_survivors.push(ratio(survivors, synthetic));
        // hash mod N, then hash mod (N-1) over the list without backend r.
        let mod_moved = flows
            .iter()
            .filter(|&&(_, h)| {
                let before = lab_ips[(h % n as u64) as usize];
                let after = rest[(h % (n as u64 - 1)) as usize];
                before != after
            })
            .count();
        out.mod_n_moved.push(ratio(mod_moved, synthetic));
    }
    out
}
