//! The scaling curve for the benchmark: how the time for one table entry to reach a whole
//! network, and the steady cost per node, grow with the cluster's size.

use std::time::Duration;

use control::gossip::tables::Key;

use super::network::mix;
use super::{Sim, SimConfig, secs};

/// One cluster size's figures. A time is `NaN` if it did not converge within
/// 600 s of virtual time (`LIMIT`).
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    pub nodes: usize,
    /// Virtual seconds from the start until every node saw every other alive.
    pub membership_converged_s: f64,
    /// Virtual seconds from the write until every node held the entry (10 ms resolution).
    pub entry_converged_s: f64,
    /// All bytes sent per node per virtual second over a steady window (60 s unless
    /// [`curve_with`] says) once the cluster is quiet after the entry converged: membership
    /// (probes, gossip, push/pull) and tables.
    pub bytes_per_node_per_s: f64,
    /// Of those, the table data (gossip and bulk syncs) of the one network.
    pub table_bytes_per_node_per_s: f64,
}

/// The longest any phase may take before it is given up as not converging.
const LIMIT: Duration = Duration::from_secs(600);

const NETWORK: &str = "curve";
/// The settling step, over which the packet rate is taken.
const SETTLE: Duration = Duration::from_secs(10);
/// Packets per node per second of a quiet cluster: a probe and its ack each second, and
/// the odd indirect probe; news gossip adds up to 15 (3 packets every 200 ms).
const QUIET_PACKETS: f64 = 2.5;
const WINDOW: Duration = Duration::from_secs(60);

/// For each size N: N nodes at 1 % loss, all on one network; membership converges, one
/// entry is written, and the steady traffic is measured over 60 s.
///
/// A 60 s window sees at most one round of push/pull (every 30 s below 33 nodes, then
/// 30 s · (⌈log2(N/32)⌉ + 1): 180 s at 1,000), and the nodes' rounds are nearly in step
/// (their timers all start at zero): above 32 nodes the window holds all of a round or
/// none of it. [`curve_with`] takes a window, e.g. the push/pull interval.
pub fn curve(sizes: &[usize], seed: u64) -> Vec<CurvePoint> {
    curve_with(sizes, seed, WINDOW)
}

/// [`curve`] with the traffic measured over `window`.
pub fn curve_with(sizes: &[usize], seed: u64, window: Duration) -> Vec<CurvePoint> {
    sizes
        .iter()
        .map(|&n| point(n, seed ^ mix(n as u64), window))
        .collect()
}

fn point(n: usize, seed: u64, window: Duration) -> CurvePoint {
    let mut sim = Sim::new(SimConfig::new(n, seed));
    sim.join_all();
    let membership =
        sim.run_until_true(LIMIT, Duration::from_millis(100), Sim::membership_converged);
    for i in 0..n {
        sim.join_network(i, NETWORK);
    }
    // Every node must know every other is on the network before the write is timed.
    let attached = |s: &Sim| (0..n).all(|i| s.node(i).tables().network_size(NETWORK) == n);
    sim.run_until_true(LIMIT, Duration::from_millis(100), attached);
    let key = Key {
        network: NETWORK.to_owned(),
        table: "endpoints".to_owned(),
        key: "probe".to_owned(),
    };
    let writer = n / 2;
    let written = sim.write(writer, key.clone(), Some(b"10.0.0.2".to_vec()));
    let held = |s: &Sim| (0..n).all(|i| s.node(i).tables().get(&key).is_some());
    let entry = written
        .ok()
        .and_then(|()| sim.run_until_true(LIMIT, Duration::from_millis(10), held));

    settle(&mut sim);
    sim.count_all_bytes(true);
    let before = totals(&sim);
    sim.run_for(window);
    let after = totals(&sim);
    let per = |a: u64, b: u64| (a - b) as f64 / n as f64 / window.as_secs_f64();
    CurvePoint {
        nodes: n,
        membership_converged_s: membership.map_or(f64::NAN, |d| d.as_secs_f64()),
        entry_converged_s: entry.map_or(f64::NAN, |d| secs(d.as_nanos() as u64)),
        bytes_per_node_per_s: per(after.0, before.0),
        table_bytes_per_node_per_s: per(after.1, before.1),
    }
}

/// Runs until the cluster is quiet: after a large cluster starts, every node still relays
/// the news of every join (and attachment) for minutes after membership converged, each
/// item `retransmit_mult · ⌈log10(n + 1)⌉` times at the full gossip rate, and that is not the
/// steady cost. Quiet: a [`SETTLE`] step with at most [`QUIET_PACKETS`] packets per node per
/// second (a probe and its ack, and a little), at most [`LIMIT`].
fn settle(sim: &mut Sim) {
    let packets = |s: &Sim| (0..s.len()).map(|i| s.stats(i).packets_sent).sum::<u64>();
    let mut waited = Duration::ZERO;
    while waited < LIMIT {
        let before = packets(sim);
        sim.run_for(SETTLE);
        waited += SETTLE;
        let rate = (packets(sim) - before) as f64 / sim.len() as f64 / SETTLE.as_secs_f64();
        if rate <= QUIET_PACKETS {
            return;
        }
    }
}

/// All bytes sent, and table bytes of the network sent, summed over the nodes.
fn totals(sim: &Sim) -> (u64, u64) {
    (0..sim.len())
        .map(|i| sim.stats(i))
        .fold((0, 0), |(all, table), s| {
            (all + s.bytes_sent, table + s.table_sent(NETWORK))
        })
}
