//! The connection-distribution benchmark (issue 6, "Balancing and the routing mesh"): short
//! TCP connections (connect + first byte) through shoal's VIP, through its routing mesh's
//! published port, through HAProxy (`mode tcp`, `balance roundrobin`, the anchor of
//! `shared/anchors/2_l4lb_haproxy.sh`) in front of the same tasks, and straight to one task, in
//! one run on one topology; then the VIP's four algorithms side by side, and Maglev's
//! disruption when one of ten backends leaves.
//!
//! The client and the backends behave like the anchor's `lbclient.rs` and `lbbackend.rs` (see
//! [`client`] and [`backend`]); the topology is in [`lab`]. Each cell opens `N` connections
//! (bounded also by `CELL_T` seconds) at one concurrency; cells are interleaved (run 1 of every
//! target and concurrency, then the algorithms, then run 2, ...), with a 2 s pause between
//! cells as in the anchor, and figures are medians [min..max] over `RUNS`.
//!
//! Writes `mesh.md`, `mesh.json` and `mesh.png` (per-backend shares, with gnuplot) to
//! `bench/results/` (or `MESH_OUT`). Needs root, `haproxy`, `ss`, `sysctl`; `gnuplot` for the
//! plot (skipped, and said so, without it). Every namespace, backend, relay and HAProxy belong
//! to the run's testbed and go when it drops (also on panic) and on SIGINT/SIGTERM/SIGHUP.
//!
//! Environment: `N` (20000 connections per cell), `CONCS` ("1 16 64"), `ALG_CONCS` ("16": the
//! concurrencies of the per-algorithm cells), `RUNS` (3), `CELL_T` (60 s per cell at most),
//! `MAGLEV_FLOWS` (4000 end-to-end flows), `MAGLEV_SYNTHETIC` (1000000 computed flows),
//! `MESH_OUT` (directory).
//!
//! Modules: `lab` builds the topology, `backend` and `client` are the anchor's programs,
//! `haproxy` configures and starts HAProxy, `cpu` reads who used the CPU, `disruption` measures
//! and computes Maglev's disruption, `report` writes the results (`markdown`, `json`, `plot`).

mod backend;
mod client;
mod cpu;
mod disruption;
mod haproxy;
mod lab;
mod report;
mod tcpstat;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::balance::{Algorithm, BalanceCounters};
use dataplane::mesh::PortStats;
use dataplane::shell::netns::NetnsRef;
use tests::testbed::{list_netns, owner_pid};

use crate::overlay::conditions;
use crate::{Machine, utc_now};
use lab::{Lab, Target};

/// The programs the benchmark runs (gnuplot is optional).
const TOOLS: [&str; 4] = ["haproxy", "ss", "sysctl", "ip"];

/// The concurrency the figures are given at.
pub(crate) const KEY_CONC: usize = 16;

/// The algorithms of the per-algorithm cells, round robin first (it is also the main cells').
pub(crate) const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RoundRobin,
    Algorithm::LeastConnections,
    Algorithm::TwoChoices,
    Algorithm::Maglev,
];

/// What to run, from the environment.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    n: usize,
    concs: Vec<usize>,
    alg_concs: Vec<usize>,
    runs: usize,
    cell_t: u64,
    pause: Duration,
    maglev_flows: usize,
    synthetic: usize,
    out_dir: PathBuf,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let num = crate::env_number;
        let list = |name: &str, default: &str| -> Result<Vec<usize>, String> {
            let v = std::env::var(name).unwrap_or_else(|_| default.to_string());
            let out: Result<Vec<usize>, String> = v
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<usize>()
                        .map(|c| c.clamp(1, 256))
                        .map_err(|_| format!("{name}={v:?}: {s:?} is not a number"))
                })
                .collect();
            out.and_then(|o| {
                if o.is_empty() {
                    Err(format!("{name} is empty"))
                } else {
                    Ok(o)
                }
            })
        };
        Ok(Config {
            n: num("N", 20_000)?.clamp(10, 1_000_000) as usize,
            concs: list("CONCS", "1 16 64")?,
            alg_concs: list("ALG_CONCS", "16")?,
            runs: num("RUNS", 3)?.clamp(1, 20) as usize,
            cell_t: num("CELL_T", 60)?.clamp(1, 600),
            pause: Duration::from_secs(2),
            maglev_flows: num("MAGLEV_FLOWS", 4000)?.clamp(10, 40_000) as usize,
            synthetic: num("MAGLEV_SYNTHETIC", 1_000_000)?.clamp(1000, 10_000_000) as usize,
            out_dir: std::env::var_os("MESH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results")),
        })
    }
}

/// One cell: one target, one concurrency, one algorithm, one run.
#[derive(Clone, Debug)]
pub(crate) struct Cell {
    run: usize,
    target: Target,
    conc: usize,
    algorithm: Algorithm,
    ok: usize,
    errors: BTreeMap<String, usize>,
    elapsed_s: f64,
    cps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max_us: f64,
    per_backend: BTreeMap<String, usize>,
    timed_out: bool,
    /// CPU of the client threads, % of one core.
    client_cpu: f64,
    usage: cpu::Usage,
    /// Flows n1's balancer gave each task during the cell (VIP and published cells).
    dataplane_counts: BTreeMap<String, u64>,
    /// The kernel's TCP counters that moved during the cell (non-zero deltas), by where:
    /// `client`, `middle` (HAProxy's container; n1 and its sandbox for the published port),
    /// `tasks` (t1..t4 summed).
    kernel: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// The client could not run at all.
    failure: Option<String>,
}

impl Cell {
    /// (max/mean, coefficient of variation) of the replies over the target's tasks (a task
    /// that never answered counts 0); NaN for the direct path (one task).
    fn balance(&self) -> (f64, f64) {
        let tasks = self.target.tasks();
        if tasks.len() < 2 {
            return (f64::NAN, f64::NAN);
        }
        balance_of(
            tasks
                .iter()
                .map(|t| self.per_backend.get(*t).map_or(0.0, |&c| c as f64)),
        )
    }

    fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// A kernel counter summed over where it was read.
    fn kernel_sum(&self, name: &str) -> u64 {
        self.kernel.values().filter_map(|m| m.get(name)).sum()
    }
}

/// (max/mean, CV = population standard deviation / mean) of some counts.
pub(crate) fn balance_of(counts: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = counts.collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.is_empty() || mean <= 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let max = v.iter().copied().fold(0.0, f64::max);
    let var = v.iter().map(|c| (c - mean) * (c - mean)).sum::<f64>() / n;
    (max / mean, var.sqrt() / mean)
}

/// The counters after the measured runs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// Per node: balancer counters and flow-table size.
    balance: Vec<(BalanceCounters, usize)>,
    /// Per node: dataplane drops by reason (non-zero only) and the total.
    drops: Vec<(Vec<(String, u64)>, u64)>,
    /// Per node: the published port's relay counters.
    mesh: Vec<Vec<PortStats>>,
    /// HAProxy's resident memory (KiB) and threads.
    haproxy_rss_threads: Option<(u64, u64)>,
    /// Per node, per VIP: (task, flows the balancer still counts open) after the runs, when
    /// every connection has closed (all should be 0).
    open_flows: Vec<Vec<OpenFlows>>,
}

/// One VIP's open flows per task: (VIP, [(task, open flows)]).
pub(crate) type OpenFlows = (String, Vec<(String, u32)>);

/// Runs the whole benchmark and writes its results. Call it first in `main`, before any other
/// thread exists (the signal handler relies on every thread inheriting its signal mask). Every
/// namespace and process it made is gone when it returns, also with an error.
#[allow(clippy::disallowed_methods)] // bench: reads the clock
pub fn run() -> Result<(), String> {
    crate::cleanup::install("mesh", || {
        let _ = std::fs::remove_dir_all(lab::work_dir());
    });
    let started = Instant::now();
    let cfg = Config::from_env()?;
    check_tools()?;
    eprintln!(
        "mesh: N={} CONCS={:?} ALG_CONCS={:?} RUNS={} CELL_T={} MAGLEV_FLOWS={}; {} cells",
        cfg.n,
        cfg.concs,
        cfg.alg_concs,
        cfg.runs,
        cfg.cell_t,
        cfg.maglev_flows,
        cfg.runs * (cfg.concs.len() * Target::ALL.len() + 3 * cfg.alg_concs.len())
    );
    let machine = Machine::probe();
    let date = utc_now();
    let revision = conditions::revision();
    let mut load = vec![format!("at start: {}", conditions::load())];

    let lab = Lab::build()?;
    lab.smoke()?;
    eprintln!(
        "{} topology up; every target answers (8 connections each)",
        stamp(started)
    );
    let cells = measured_runs(&lab, &cfg, started)?;
    let measured_s = started.elapsed().as_secs_f64();
    load.push(format!("after the measured runs: {}", conditions::load()));

    std::thread::sleep(cfg.pause);
    let end_to_end = disruption::end_to_end(&lab, cfg.maglev_flows)?;
    eprintln!(
        "{} maglev end to end: {} of {} flows moved ({:.2} %), {} of them between surviving \
         tasks; round 2 errors before retry {:?}",
        stamp(started),
        end_to_end.moved,
        end_to_end.compared,
        100.0 * end_to_end.fraction(),
        end_to_end.moved_from_survivors,
        end_to_end.round2_first_errors
    );
    let ips: Vec<_> = lab::TASKS.iter().map(|t| lab.task_ip(t)).collect();
    let computed = disruption::computed(
        lab.cluster.network(lab::NET).vni,
        &ips,
        lab.maglev_vip(),
        cfg.synthetic,
    );
    let counters = read_counters(&lab);
    let haproxy_cfg = lab.haproxy_cfg.clone();
    drop(lab);
    let leftovers: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| owner_pid(n) == Some(std::process::id()))
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("namespaces left behind: {leftovers:?}"));
    }
    load.push(format!("at the end: {}", conditions::load()));
    let total_s = started.elapsed().as_secs_f64();

    let report = report::Report {
        cfg: &cfg,
        machine: &machine,
        date: &date,
        revision: &revision,
        conditions: &load,
        cells: &cells,
        end_to_end: &end_to_end,
        computed: &computed,
        counters: &counters,
        haproxy_cfg: &haproxy_cfg,
        haproxy_version: haproxy::version(),
        measured_s,
        total_s,
    };
    let written = report.write()?;
    println!("{}", report.summary());
    println!(
        "measured in {measured_s:.0} s, {total_s:.0} s in all; wrote {}",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Every cell of every run, interleaved.
fn measured_runs(lab: &Lab, cfg: &Config, started: Instant) -> Result<Vec<Cell>, String> {
    let mut cells = Vec::new();
    for run in 1..=cfg.runs {
        for &conc in &cfg.concs {
            for target in Target::ALL {
                let c = cell(lab, cfg, run, target, conc, Algorithm::RoundRobin);
                eprintln!("{} {}", stamp(started), progress(&c));
                cells.push(c);
                std::thread::sleep(cfg.pause);
            }
        }
        for algorithm in &ALGORITHMS[1..] {
            lab.set_service(*algorithm)?;
            for &conc in &cfg.alg_concs {
                let c = cell(lab, cfg, run, Target::Vip, conc, *algorithm);
                eprintln!("{} {}", stamp(started), progress(&c));
                cells.push(c);
                std::thread::sleep(cfg.pause);
            }
        }
        lab.set_service(Algorithm::RoundRobin)?;
    }
    Ok(cells)
}

/// One cell: the client's figures, who used the CPU, what n1's balancer counted.
#[allow(clippy::disallowed_methods)] // bench: reads the clock
fn cell(
    lab: &Lab,
    cfg: &Config,
    run: usize,
    target: Target,
    conc: usize,
    algorithm: Algorithm,
) -> Cell {
    let balanced = matches!(target, Target::Vip | Target::Published);
    let dp_before = if balanced {
        lab.vip_totals()
    } else {
        BTreeMap::new()
    };
    let places: [(&'static str, Vec<&NetnsRef>); 3] = [
        ("client", vec![lab.client_ns(target)]),
        ("middle", lab.middle_ns(target)),
        ("tasks", lab.task_ns()),
    ];
    let tcp0: Vec<_> = places
        .iter()
        .map(|(_, ns)| tcpstat::read_all(ns.iter().copied()))
        .collect();
    let snap0 = cpu::snapshot(Some(lab.haproxy_pid));
    let t0 = Instant::now();
    let result = client::run(
        lab.client_ns(target),
        lab.addr(target),
        cfg.n,
        conc,
        Duration::from_secs(cfg.cell_t),
    );
    let wall = t0.elapsed().as_secs_f64();
    let snap1 = cpu::snapshot(Some(lab.haproxy_pid));
    let kernel = places
        .iter()
        .zip(&tcp0)
        .map(|((place, ns), before)| {
            let after = tcpstat::read_all(ns.iter().copied());
            (*place, tcpstat::delta(before, &after))
        })
        .filter(|(_, d)| !d.is_empty())
        .collect();
    let dataplane_counts = if balanced {
        lab.vip_totals()
            .into_iter()
            .map(|(t, after)| {
                let before = dp_before.get(&t).copied().unwrap_or(0);
                (t, after.saturating_sub(before))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let (out, failure) = match result {
        Ok(out) => (out, None),
        Err(e) => (client::Outcome::default(), Some(e.to_string())),
    };
    Cell {
        run,
        target,
        conc,
        algorithm,
        ok: out.ok,
        errors: out.errors.clone(),
        elapsed_s: out.elapsed_s,
        cps: out.cps(),
        p50: out.pct(50.0),
        p90: out.pct(90.0),
        p99: out.pct(99.0),
        p999: out.pct(99.9),
        max_us: out.lat_us.last().map_or(f64::NAN, |&m| f64::from(m)),
        per_backend: out.per_backend.clone(),
        timed_out: out.timed_out,
        client_cpu: out.cpu_s / wall * 100.0,
        usage: snap0.usage_until(&snap1, wall),
        dataplane_counts,
        kernel,
        failure,
    }
}

/// One progress line.
fn progress(c: &Cell) -> String {
    let (mm, cv) = c.balance();
    let mut line = format!(
        "run {} {:<9} {:<17} c={:<3} {:>6.0} conn/s p50 {:>5.0} p99 {:>6.0} µs max/mean {:.4} \
         cv {:.4} ok {} err {} cpu client {:.0}% machine {:.0}%",
        c.run,
        c.target.key(),
        report::alg_key(c.algorithm),
        c.conc,
        c.cps,
        c.p50,
        c.p99,
        mm,
        cv,
        c.ok,
        c.error_count(),
        c.client_cpu,
        c.usage.machine_pct
    );
    if !c.errors.is_empty() {
        line += &format!(" errors {:?}", c.errors);
    }
    if !c.kernel.is_empty() {
        line += &format!(" kernel {:?}", c.kernel);
    }
    if c.timed_out {
        line += " TIMED OUT";
    }
    if let Some(f) = &c.failure {
        line += &format!(" FAILED: {f}");
    }
    line
}

/// The dataplanes' and relays' counters, and HAProxy's memory, after the runs.
fn read_counters(lab: &Lab) -> Counters {
    let mut c = Counters::default();
    for node in &lab.cluster.nodes {
        if let Ok(s) = node.dataplane.stats() {
            c.balance.push((s.balance, s.conntrack_entries));
            let drops: Vec<(String, u64)> = s
                .core
                .drop_counts()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.as_str().to_string(), n))
                .collect();
            c.drops.push((drops, s.core.total_drops()));
            c.open_flows.push(
                s.vips
                    .iter()
                    .map(|v| {
                        let tasks = v
                            .backends
                            .iter()
                            .map(|b| {
                                let name = lab.task_at(b.ip).map_or(b.ip.to_string(), String::from);
                                (name, b.active)
                            })
                            .collect();
                        (v.vip.to_string(), tasks)
                    })
                    .collect(),
            );
        }
    }
    c.mesh = lab.meshes.iter().map(|m| m.stats()).collect();
    c.haproxy_rss_threads = haproxy::rss_and_threads(lab.haproxy_pid);
    c
}

/// `Err` naming the packages unless every program of [`TOOLS`] is on PATH.
fn check_tools() -> Result<(), String> {
    for tool in TOOLS {
        if !have(tool) {
            return Err(format!(
                "missing tool {tool}: apt-get install -y haproxy iproute2 procps (gnuplot for \
                 the plot)"
            ));
        }
    }
    Ok(())
}

/// Whether `tool` is on PATH.
pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `[  12.3s]`: the time since `started`, for progress lines.
fn stamp(started: Instant) -> String {
    format!("[{:>6.1}s]", started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn balance_of_counts() {
        let (mm, cv) = balance_of([5000.0, 5000.0, 5000.0, 5000.0].into_iter());
        assert_eq!((mm, cv), (1.0, 0.0));
        let (mm, cv) = balance_of([6.0, 2.0].into_iter());
        assert!((mm - 1.5).abs() < 1e-12 && (cv - 0.5).abs() < 1e-12);
        assert!(balance_of([0.0, 0.0].into_iter()).0.is_nan());
    }

    #[test]
    fn maglev_moves_about_a_tenth_when_one_of_ten_leaves() {
        let vni = dataplane::types::Vni::new(4100).expect("fits");
        let ips: Vec<std::net::Ipv4Addr> = (11..21)
            .map(|h| std::net::Ipv4Addr::new(10, 255, 0, h))
            .collect();
        let c = disruption::computed(vni, &ips, std::net::Ipv4Addr::new(10, 255, 0, 101), 20_000);
        assert_eq!(c.moved.len(), 10);
        for (moved, survivors) in c.moved.iter().zip(&c.moved_from_survivors) {
            assert!((0.08..0.13).contains(moved), "{moved}");
            assert!(*survivors < 0.02, "{survivors}");
        }
        assert!(c.mod_n_moved.iter().all(|m| *m > 0.8));
    }
}
