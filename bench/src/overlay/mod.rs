//! The overlay benchmark: its configuration from the environment and the run loop.
//!
//! Overlay data path, end to end: single-stream TCP throughput (iperf3) and TCP request/response
//! round trip (sockperf ping-pong, 64 B) over four paths built in one run, on the same
//! topology shape (two node namespaces on the testbed's underlay bridge):
//!
//! 1. `veth`: the underlay itself (node eth0 -> veth -> bridge -> veth -> node eth0), no overlay;
//! 2. `kernel_vxlan`: a kernel `vxlan` device in each node (VNI 4097, UDP 4789, static FDB and
//!    neighbours, MTU 1450), as in `shared/anchors/1b_vxlan.sh`;
//! 3. `plain`: a 2-node shoal [`Cluster`](tests::cluster::Cluster) with a plain network, one
//!    container per node;
//! 4. `sealed`: the same with an encrypted (ChaCha20-Poly1305) network.
//!
//! Runs are interleaved (run 1 of every path, then run 2, ...) so drift hits all paths alike;
//! figures are medians [min..max]. Afterwards, optionally, one extra unmeasured iperf3 run per
//! shoal path under `perf` (CPU profile of this process, which holds the dataplane threads, and
//! syscall counts per forwarded frame).
//!
//! Writes `bench/results/overlay.md` and `bench/results/overlay.json`. Needs root. Every
//! namespace, TAP and server process lives in testbeds that are removed on exit, on panic and
//! on SIGINT/SIGTERM/SIGHUP; every client is bounded by `timeout`.
//!
//! Environment: `RUNS` (3), `IPERF_T` (5 s), `SOCKPERF_T` (5 s), `PROFILE` (1; 0 skips the
//! perf pass), `OVERLAY_OUT` (directory for the results; default `bench/results`).
//!
//! Modules: `paths` builds the testbeds and paths, `measure` runs and parses iperf3 and
//! sockperf, `threads` reads the dataplane threads' CPU time, `counters` the dataplane's and
//! the kernel's counters, `perf` and `profile` do the perf pass, `report` writes the results,
//! `conditions` records the code and the machine's load, `signals` cleans up on a signal.
#![allow(clippy::disallowed_methods)] // A benchmark reads the clock; that is its job.

pub(crate) mod conditions;
mod counters;
mod measure;
mod paths;
mod perf;
mod profile;
mod report;
mod threads;

use crate::{Machine, utc_now};
use measure::RunResult;
use paths::{Beds, Kind, PathDef};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::testbed::{list_netns, owner_pid};

/// The programs the benchmark runs (perf is checked on its own, it is optional).
const TOOLS: [&str; 7] = [
    "iperf3", "sockperf", "ss", "ip", "bridge", "ping", "timeout",
];

/// What to run, from the environment.
#[derive(Clone, Debug)]
struct Config {
    runs: usize,
    iperf_t: u64,
    sockperf_t: u64,
    profile: bool,
    out_dir: PathBuf,
}

impl Config {
    fn from_env() -> Config {
        let num = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
                Err(_) => default,
            }
        };
        let runs = num("RUNS", 3).clamp(1, 50) as usize;
        let iperf_t = num("IPERF_T", 5).clamp(1, 120);
        let sockperf_t = num("SOCKPERF_T", 5).clamp(1, 120);
        let profile = num("PROFILE", 1) != 0;
        let out_dir = std::env::var_os("OVERLAY_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
        Config {
            runs,
            iperf_t,
            sockperf_t,
            profile,
            out_dir,
        }
    }
}

/// Runs the whole benchmark and writes its results. Call it first in `main`, before any other
/// thread exists: the signal handler relies on every thread inheriting its signal mask.
pub fn run() {
    crate::cleanup::install("overlay", || {
        if let Some(pid) = perf::running() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    let started = Instant::now();
    let cfg = Config::from_env();
    check_tools();
    let est = cfg.runs as u64 * 4 * (cfg.iperf_t + 1 + cfg.sockperf_t + 2)
        + if cfg.profile { 20 } else { 0 };
    eprintln!(
        "overlay: RUNS={} IPERF_T={} SOCKPERF_T={} PROFILE={}; about {est} s",
        cfg.runs, cfg.iperf_t, cfg.sockperf_t, cfg.profile as u8
    );
    let machine = Machine::probe();
    let date = utc_now();
    let revision = conditions::revision();

    let mut load = vec![format!("at start: {}", conditions::load())];
    let (mut beds, paths, kernel_setup) = paths::build();
    eprintln!("{} topology up; all four paths answer ping", stamp(started));
    let results = measured_runs(&mut beds, &paths, &cfg, started);
    let measured_s = started.elapsed().as_secs_f64();
    load.push(format!("after the measured runs: {}", conditions::load()));

    // Counters after the measured runs (before the profile pass adds to them).
    let counters = counters::Counters::read(&beds, &paths);
    let profiles = if cfg.profile {
        profile::profile_shoal_paths(&mut beds, &paths, started)
    } else {
        Vec::new()
    };
    drop(beds);
    let total_s = started.elapsed().as_secs_f64();
    let leftovers: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| owner_pid(n) == Some(std::process::id()))
        .collect();
    assert!(
        leftovers.is_empty(),
        "namespaces left behind: {leftovers:?}"
    );

    let report = report::Report {
        cfg: &cfg,
        machine: &machine,
        date: &date,
        paths: &paths,
        results: &results,
        counters: &counters,
        profiles: &profiles,
        kernel_setup: &kernel_setup,
        revision: &revision,
        conditions: &load,
        measured_s,
        total_s,
    };
    let (md_path, js_path) = report.write();
    println!("{}", report.results_table());
    for prof in &profiles {
        println!("{}", prof.markdown());
    }
    println!(
        "measured in {measured_s:.0} s, {total_s:.0} s in all; wrote {} and {}",
        md_path.display(),
        js_path.display()
    );
}

/// Panics, naming the packages, unless every program of [`TOOLS`] is on PATH.
fn check_tools() {
    for tool in TOOLS {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "missing tool {tool}: apt-get install -y iperf3 sockperf iproute2 iputils-ping"
        );
    }
}

/// `cfg.runs` runs of every path, interleaved (run 1 of each path, then run 2, ...).
fn measured_runs(
    beds: &mut Beds,
    paths: &[PathDef],
    cfg: &Config,
    started: Instant,
) -> BTreeMap<Kind, Vec<RunResult>> {
    let mut results: BTreeMap<Kind, Vec<RunResult>> = BTreeMap::new();
    for run in 1..=cfg.runs {
        for p in paths {
            let r = measure::measure(beds, p, cfg);
            eprintln!(
                "{} run {run}/{} {:<12} {:>6.3} Gbit/s retr={:<5} rtt p50={:>6.1} p99={:>6.1} µs dp cpu n1/n2={:.0}/{:.0}%{}",
                stamp(started),
                cfg.runs,
                p.kind.key(),
                r.gbps,
                r.retransmits,
                r.rtt_p50,
                r.rtt_p99,
                r.dp_cpu[0],
                r.dp_cpu[1],
                if r.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ERRORS: {}", r.errors.join("; "))
                }
            );
            results.entry(p.kind).or_default().push(r);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    results
}

/// `[  12.3s]`: the time since `started`, for progress lines.
fn stamp(started: Instant) -> String {
    format!("[{:>5.1}s]", started.elapsed().as_secs_f64())
}

/// `timeout <limits> <argv>`, owned.
fn timeout(limits: &[&str], argv: &[&str]) -> Vec<String> {
    ["timeout"]
        .iter()
        .chain(limits)
        .chain(argv)
        .map(|a| a.to_string())
        .collect()
}
