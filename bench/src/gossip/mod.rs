//! The gossip benchmark: membership convergence of shoal's gossip process (`shoal gossip`)
//! next to HashiCorp Serf, the anchor of `shared/anchors/4_serf.sh` and `serf_bench.py`
//! (`RESULTS.md` §4), with the same scenario and the same measurement, interleaved in one run
//! (Serf run 1, shoal run 1, Serf run 2, ...) for each cluster size N of `SIZES`:
//!
//! 1. N agents on 127.0.0.10 .. 127.0.0.(10+N-1), port 7946, in a namespace of their own
//!    (`bgos-<pid>-<k>`, loopback only), all joining the first; wait until every agent has
//!    seen all N; RSS per agent;
//! 2. agent N+1 joins through agent N/2: `join_s` until all N existing agents log it joined;
//! 3. SIGKILL agent n1: `fail_s` until all N others (the new one included) log it failed.
//!
//! Times are taken when each agent's output line arrives on this program's pipe (see
//! [`process`]); figures are medians [min..max] over `RUNS`, with ratios shoal / Serf.
//!
//! Writes `gossip.md` and `gossip.json` to `bench/results/` (or `GOSSIP_OUT`). Needs root,
//! `ip`, `serf` (`apt-get install -y serf`), and for the shoal side `target/release/shoal`
//! with its `gossip` command (built first with cargo, see [`shoal`]); without it the Serf
//! side is measured alone and the report says why. Every agent is killed by its `Child` when
//! its run ends, every wait is bounded, and the namespaces go when their guard drops (also on
//! panic) and on SIGINT/SIGTERM/SIGHUP.
//!
//! Environment: `SIZES` ("8 32"), `RUNS` (5), `SETTLE` (2 s before the RSS reading and before
//! the kill, as the anchor), `CONVERGE_T` (60 s), `JOIN_T` (60 s), `FAIL_T` (90 s),
//! `SHOAL_BUILD` (1: `cargo build --release -p control --bin shoal` first; 0: do not),
//! `SHOAL_BIN` (the binary to measure; default next to this program), `GOSSIP_OUT`,
//! `IMPLS` ("serf shoal": leave one out to measure the other alone, when looking into it;
//! a report without the anchor has no ratios), `SIM` (0: no simulated curve).
//!
//! Modules: `netns` the run's namespace, `process` an agent process and its timed output,
//! `serf` and `shoal` each implementation's command lines and log lines, `scenario` one run,
//! `report` the files.
#![allow(clippy::disallowed_methods)] // A benchmark reads the clock; that is its job.

mod netns;
mod process;
mod report;
mod scenario;
mod serf;
mod shoal;
mod simulated;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::overlay::conditions;
use crate::{Machine, utc_now};
use scenario::RunResult;

/// The programs the benchmark runs.
const TOOLS: [&str; 2] = ["ip", "serf"];

/// The two implementations, in the order of every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Impl {
    Serf,
    Shoal,
}

impl Impl {
    pub(crate) const ALL: [Impl; 2] = [Impl::Serf, Impl::Shoal];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Impl::Serf => "serf",
            Impl::Shoal => "shoal",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Impl::Serf => "Serf",
            Impl::Shoal => "shoal",
        }
    }
}

/// What to run, from the environment.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    sizes: Vec<usize>,
    runs: usize,
    settle: Duration,
    converge_t: u64,
    join_t: u64,
    fail_t: u64,
    build: bool,
    out_dir: PathBuf,
    /// `SIM=0`: leave out the simulated curve (it takes about a minute).
    skip_simulated: bool,
    /// `IMPLS`: the implementations measured (both by default).
    impls: Vec<Impl>,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let num = crate::env_number;
        let v = std::env::var("SIZES").unwrap_or_else(|_| "8 32".into());
        let sizes: Vec<usize> = v
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .map(|n| n.clamp(2, scenario::MAX_N))
                    .map_err(|_| format!("SIZES={v:?}: {s:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
        if sizes.is_empty() {
            return Err("SIZES is empty".into());
        }
        Ok(Config {
            sizes,
            runs: num("RUNS", 5)?.clamp(1, 50) as usize,
            settle: Duration::from_secs(num("SETTLE", 2)?.min(60)),
            converge_t: num("CONVERGE_T", 60)?.clamp(5, 600),
            join_t: num("JOIN_T", 60)?.clamp(1, 600),
            fail_t: num("FAIL_T", 90)?.clamp(5, 600),
            build: num("SHOAL_BUILD", 1)? != 0,
            out_dir: std::env::var_os("GOSSIP_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results")),
            skip_simulated: num("SIM", 1)? == 0,
            impls: impls_from_env()?,
        })
    }
}

/// `IMPLS`, e.g. "shoal": the implementations to measure, all of them when unset.
fn impls_from_env() -> Result<Vec<Impl>, String> {
    let Ok(v) = std::env::var("IMPLS") else {
        return Ok(Impl::ALL.to_vec());
    };
    let words: Vec<&str> = v.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    if let Some(bad) = words
        .iter()
        .find(|w| !Impl::ALL.iter().any(|i| i.key() == **w))
    {
        return Err(format!("IMPLS={v:?}: {bad:?} is neither serf nor shoal"));
    }
    let chosen: Vec<Impl> = Impl::ALL
        .into_iter()
        .filter(|i| words.contains(&i.key()))
        .collect();
    if chosen.is_empty() {
        return Err(format!("IMPLS={v:?} names no implementation (serf, shoal)"));
    }
    Ok(chosen)
}

/// Runs the whole benchmark and writes its results. Call it first in `main`, before any other
/// thread exists (the signal handler relies on every thread inheriting its signal mask). Every
/// namespace and agent it made is gone when it returns, also with an error.
pub fn run() -> Result<(), String> {
    crate::cleanup::install("gossip", netns::remove_mine);
    let started = Instant::now();
    let cfg = Config::from_env()?;
    check_tools()?;
    netns::sweep();
    let machine = Machine::probe();
    let date = utc_now();
    let serf_version = serf::version();
    let shoal = shoal::prepare(cfg.build);
    if let Err(e) = &shoal {
        eprintln!("gossip: the shoal side is not measured: {e}");
    }
    let revision = conditions::revision();
    let mut load = vec![format!("at start: {}", conditions::load())];
    eprintln!(
        "gossip: SIZES={:?} RUNS={} SETTLE={:?}; {}; shoal: {}",
        cfg.sizes,
        cfg.runs,
        cfg.settle,
        serf_version,
        match &shoal {
            Ok(s) => s.bin.display().to_string(),
            Err(_) => "not measured".into(),
        }
    );

    let measuring = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    for &n in &cfg.sizes {
        for run in 1..=cfg.runs {
            for imp in Impl::ALL {
                if !cfg.impls.contains(&imp) {
                    continue;
                }
                let bin = match (imp, &shoal) {
                    (Impl::Shoal, Err(_)) => continue,
                    (Impl::Shoal, Ok(s)) => Some(s),
                    (Impl::Serf, _) => None,
                };
                let r = scenario::one_run(imp, bin, n, run, &cfg);
                eprintln!(
                    "{} N={n} run {run}/{} {}",
                    stamp(started),
                    cfg.runs,
                    progress(&r)
                );
                results.push(r);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    let measured_s = measuring.elapsed().as_secs_f64();
    load.push(format!("at the end: {}", conditions::load()));
    let leftovers = netns::leftovers();
    if !leftovers.is_empty() {
        return Err(format!("namespaces left behind: {leftovers:?}"));
    }
    let report = report::Report {
        cfg: &cfg,
        machine: &machine,
        date: &date,
        revision: &revision,
        conditions: &load,
        serf_version: &serf_version,
        shoal: shoal.as_ref(),
        results: &results,
        measured_s,
        total_s: started.elapsed().as_secs_f64(),
    };
    let (md, js) = report.write()?;
    println!("{}", report.summary());
    println!(
        "measured in {measured_s:.0} s; wrote {} and {}",
        md.display(),
        js.display()
    );
    Ok(())
}

/// One progress line of a run.
fn progress(r: &RunResult) -> String {
    let f = |x: Option<f64>, d: usize| x.map_or("–".into(), |v| format!("{v:.d$}"));
    let mut line = format!(
        "{:<5} converged {:>6} s, RSS {:>5} MiB; join seen by all {:>6} s (median {}); kill → \
         failed at all {:>6} s (first suspect {}, {} agents)",
        r.imp.key(),
        f(r.converged_s, 2),
        f(r.rss_median_kib().map(|k| k / 1024.0), 1),
        f(r.join.map(|s| s.all), 3),
        f(r.join.map(|s| s.median), 3),
        f(r.fail.map(|s| s.all), 2),
        f(r.first_suspect_s, 2),
        r.suspect_agents,
    );
    if let Some(c) = r.join_cmd_s {
        line += &format!("; `serf join` returned {c:.3} s");
    }
    if !r.died.is_empty() {
        line += &format!("; exited early: {}", r.died.join(" "));
    }
    if let Some(e) = &r.error {
        line += &format!("\n    FAILED: {}", e.replace('\n', "\n    "));
    }
    line
}

/// `Err` naming the packages unless every program of [`TOOLS`] is on PATH.
fn check_tools() -> Result<(), String> {
    for tool in TOOLS {
        if !crate::mesh::have(tool) {
            return Err(format!(
                "missing tool {tool}: apt-get install -y serf iproute2"
            ));
        }
    }
    Ok(())
}

/// `[  12.3s]`: the time since `started`, for progress lines.
fn stamp(started: Instant) -> String {
    format!("[{:>6.1}s]", started.elapsed().as_secs_f64())
}
