//! Who used the CPU during a cell: this process's threads grouped by name (dataplane per node,
//! mesh relays, backends), HAProxy's threads, and the whole machine. Thread times come from
//! `/proc/.../schedstat` (nanoseconds of run time); the machine's from `/proc/stat`, which also
//! counts softirq work (most of the kernel's TCP and TAP work runs there or in the threads).
//!
//! The client threads live only as long as their cell, so they report their own time
//! ([`this_thread_ns`]) rather than being sampled here.

use std::collections::BTreeMap;

use super::backend;

/// CPU counters at one moment.
#[derive(Clone, Debug, Default)]
pub(super) struct Snapshot {
    /// Run time by group, ns.
    groups: BTreeMap<String, u64>,
    /// (busy, total) jiffies of all CPUs.
    machine: (u64, u64),
}

/// Share of one core, in %, by group over an interval; `machine` is the share of all cores.
#[derive(Clone, Debug, Default)]
pub(super) struct Usage {
    pub groups: BTreeMap<String, f64>,
    pub machine_pct: f64,
}

/// The group a thread of this process counts in, by its name.
fn group_of(comm: &str) -> Option<String> {
    if let Some(n) = comm.strip_prefix("dataplane-") {
        return Some(format!("dataplane n{n}"));
    }
    match comm {
        "shoal-mesh" => Some("mesh relays".into()),
        c if c == backend::THREAD_NAME => Some("backends".into()),
        _ => None,
    }
}

/// This process's threads by group, plus the threads of `haproxy` (a pid) as "haproxy".
pub(super) fn snapshot(haproxy: Option<u32>) -> Snapshot {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for (comm, ns) in tasks("/proc/self/task") {
        if let Some(g) = group_of(&comm) {
            *groups.entry(g).or_default() += ns;
        }
    }
    if let Some(pid) = haproxy {
        let total = tasks(&format!("/proc/{pid}/task"))
            .into_iter()
            .map(|(_, ns)| ns)
            .sum();
        groups.insert("haproxy".into(), total);
    }
    Snapshot {
        groups,
        machine: machine(),
    }
}

impl Snapshot {
    /// The usage between `self` (earlier) and `later`, over `wall_s` seconds.
    pub(super) fn usage_until(&self, later: &Snapshot, wall_s: f64) -> Usage {
        let mut groups = BTreeMap::new();
        for (g, &after) in &later.groups {
            let before = self.groups.get(g).copied().unwrap_or(0);
            groups.insert(
                g.clone(),
                after.saturating_sub(before) as f64 / 1e9 / wall_s * 100.0,
            );
        }
        let busy = later.machine.0.saturating_sub(self.machine.0) as f64;
        let total = later.machine.1.saturating_sub(self.machine.1) as f64;
        Usage {
            groups,
            machine_pct: if total > 0.0 {
                busy / total * 100.0
            } else {
                f64::NAN
            },
        }
    }
}

/// (comm, run time in ns) of every task under `dir` (`/proc/<pid>/task`).
fn tasks(dir: &str) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            Some((comm.trim().to_string(), first_number(&stat)?))
        })
        .collect()
}

/// The calling thread's run time so far, ns.
pub(super) fn this_thread_ns() -> Option<u64> {
    first_number(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

fn first_number(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// (busy, total) jiffies summed over all CPUs (busy = all but idle and iowait).
fn machine() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest times are inside user/nice).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}
