//! The failure-detection timeline the gossip benchmark measures on real processes, on the
//! simulator: a converged cluster, one node stopped (as a SIGKILL), and when the others
//! suspect it and declare it failed. Repeated over seeds, it shows the protocol's spread
//! (the first probe of the victim is luck) apart from the implementation's.

use std::time::Duration;

use super::network::{Link, mix, name};
use super::{Sim, SimConfig, secs};

/// One kill's timeline, virtual seconds after the victim went silent.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub nodes: usize,
    /// The first node to suspect the victim (its own probe failed).
    pub first_suspect_s: f64,
    /// The first node to declare it failed (its suspicion timer ran out).
    pub first_failed_s: f64,
    /// Half the others had declared it failed.
    pub median_failed_s: f64,
    /// Every other node had.
    pub all_failed_s: f64,
}

/// `n` nodes on `link` converge (joining one after another, as in the benchmark), settle for
/// 2 s plus a seeded fraction of a second (so the kill falls anywhere in the probe rounds),
/// then node 1 is stopped. `None` if the cluster did not converge or not every node declared
/// the victim failed within 90 s.
pub fn detection(n: usize, seed: u64, link: Link) -> Option<Detection> {
    let mut config = SimConfig::new(n, seed);
    config.link = link;
    let mut sim = Sim::new(config);
    sim.join_all();
    sim.run_until_true(
        Duration::from_secs(120),
        Duration::from_millis(10),
        Sim::membership_converged,
    )?;
    sim.run_for(Duration::from_secs(2) + Duration::from_millis(mix(seed) % 1000));
    let victim = 1;
    let start = sim.now().0;
    sim.stop(victim);
    let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    let who = name(victim);
    let failed_at = |s: &Sim, i: usize| {
        s.failures()
            .iter()
            .find(|f| f.observer == i && f.node == who && f.at.0 >= start)
            .map(|f| f.at.0)
    };
    sim.run_until_true(Duration::from_secs(90), Duration::from_millis(1), |s| {
        others.iter().all(|&i| failed_at(s, i).is_some())
    })?;
    let mut failed: Vec<f64> = others
        .iter()
        .filter_map(|&i| failed_at(&sim, i))
        .map(|t| secs(t - start))
        .collect();
    failed.sort_by(f64::total_cmp);
    let first_suspect = sim
        .suspicions()
        .iter()
        .filter(|f| f.node == who && f.at.0 >= start)
        .map(|f| f.at.0)
        .min()?;
    Some(Detection {
        nodes: n,
        first_suspect_s: secs(first_suspect - start),
        first_failed_s: failed[0],
        median_failed_s: failed[failed.len() / 2],
        all_failed_s: failed[failed.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback-like links, as in the benchmark: no loss, 0.05–0.2 ms.
    const LOOPBACK: Link = Link {
        loss: 0.0,
        latency_min: Duration::from_micros(50),
        latency_max: Duration::from_micros(200),
    };

    #[test]
    fn a_stopped_node_is_suspected_within_a_probe_round_and_failed_everywhere_in_lifeguard_time() {
        // 8 nodes: a probe round visits every member within 8 probe intervals (1 s), the
        // suspicion then runs between 4 s (k = 3 confirmations) and 24 s (none) — Lifeguard
        // with memberlist's LAN defaults.
        for seed in 1..=5 {
            let d = detection(8, seed, LOOPBACK).expect("converged and every node declared it");
            println!("seed {seed}: {d:?}");
            assert!(d.first_suspect_s <= 8.0 + 1.0, "{d:?}");
            assert!(d.first_failed_s >= d.first_suspect_s + 4.0 - 0.01, "{d:?}");
            assert!(d.all_failed_s <= d.first_suspect_s + 24.0 + 1.0, "{d:?}");
            assert!(d.first_failed_s <= d.median_failed_s && d.median_failed_s <= d.all_failed_s);
        }
    }
}
