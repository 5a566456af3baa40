//! The dataplane threads of this process: which ones a cluster started, and the share of a core
//! each used while something ran (utime + stime from `/proc/self/task`).

use crate::first_line_of;
use std::collections::BTreeMap;
use std::time::Instant;

/// The dataplane threads of one cluster, by node (`dataplane-1`, `dataplane-2`).
#[derive(Clone, Copy, Debug)]
pub(super) struct DataplaneThreads {
    tids: [Option<u32>; 2],
    /// Clock ticks per second of `/proc` CPU times.
    clk_tck: f64,
}

impl DataplaneThreads {
    /// No threads: a path without a dataplane (its CPU shares are NaN).
    pub(super) const NONE: DataplaneThreads = DataplaneThreads {
        tids: [None; 2],
        clk_tck: f64::NAN,
    };

    /// Runs `start` (which starts a cluster) and finds the dataplane threads that appeared.
    pub(super) fn started_by<T>(clk_tck: f64, start: impl FnOnce() -> T) -> (T, DataplaneThreads) {
        let before = all();
        let started = start();
        let mut tids = [None, None];
        for (tid, comm) in all().into_iter().filter(|(t, _)| !before.contains_key(t)) {
            match comm.as_str() {
                "dataplane-1" => tids[0] = Some(tid),
                "dataplane-2" => tids[1] = Some(tid),
                _ => {}
            }
        }
        (started, DataplaneThreads { tids, clk_tck })
    }

    /// Runs `f`; returns what it returned, how long it took (s) and the % of one core each
    /// thread used meanwhile (NaN where unknown).
    pub(super) fn cpu_during<T>(&self, f: impl FnOnce() -> T) -> (T, f64, [f64; 2]) {
        let cpu0 = self.tids.map(|t| t.and_then(cpu_ticks));
        let t0 = Instant::now();
        let out = f();
        let wall = t0.elapsed().as_secs_f64();
        let cpu1 = self.tids.map(|t| t.and_then(cpu_ticks));
        let mut pct = [f64::NAN; 2];
        for i in 0..2 {
            if let (Some(a), Some(b)) = (cpu0[i], cpu1[i]) {
                pct[i] = (b - a) as f64 / self.clk_tck / wall * 100.0;
            }
        }
        (out, wall, pct)
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub(super) fn clk_tck() -> f64 {
    first_line_of(&["getconf", "CLK_TCK"])
        .parse()
        .unwrap_or(100.0)
}

/// This process's dataplane threads: tid -> name.
fn all() -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm.starts_with("dataplane-") {
            out.insert(tid, comm.to_string());
        }
    }
    out
}

/// utime + stime of one of our threads, in clock ticks.
fn cpu_ticks(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}
