//! The DNS benchmark (issue 4): shoal's resolver against unbound, the anchor of
//! `shared/anchors/3_dns.sh`, measured in one run in one namespace.
//!
//! A testbed namespace with only loopback holds both servers: unbound (`num-threads: 1`, the
//! anchor's configuration) on 127.0.0.53:53 and shoal's `DnsServer`, in this process, on
//! 127.0.0.11:53. Both hold the same 1000 names, `svc-0000.anc.test` .. `svc-0999.anc.test` →
//! 10.200.x.y (for shoal: services `svc-NNNN` with those VIPs on a network named `anc.test`,
//! which a client on that network reaches as `<service>.<network>`), and dnsperf gets the same
//! query file (the 1000 names, shuffled) against both.
//!
//! Before measuring, every name is asked of both servers (`dig`) and must come back with its
//! VIP, and one dnsperf pass over the file must be 100 % NOERROR with nothing lost. Then,
//! `RUNS` times, interleaved (unbound, shoal, unbound, ...): dnsperf at max rate for
//! `DNSPERF_T` s (qps, lost, both ends' CPU), and at `-Q FIXED_QPS` with `-v` (latency
//! percentiles of every answer, the server's CPU per query at that load). Last, one run per
//! server at 80 % of its own median peak: the target is no lost query there for shoal.
//!
//! Writes `dns.md` and `dns.json` to `bench/results/` (or `DNS_OUT`). Needs root, `dnsperf`,
//! `unbound`, `dig`. Every dnsperf run has `-l` and runs under `timeout`; the namespace and
//! unbound go when the testbed drops (also on panic) and on SIGINT/SIGTERM/SIGHUP.
//!
//! Environment: `RUNS` (3), `DNSPERF_T` (20 s), `FIXED_QPS` (10000), `DNS_OUT` (directory).
//!
//! Modules: `servers` sets up both servers and checks them, `dnsperf` runs and parses dnsperf,
//! `report` writes the results.

mod dnsperf;
mod report;
mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::testbed::{list_netns, owner_pid};

use crate::overlay::conditions;
use crate::{Machine, first_line_of, median, utc_now};
use dnsperf::Measured;
use servers::{Bed, Server};

/// The programs the benchmark runs.
const TOOLS: [&str; 5] = ["dnsperf", "unbound", "unbound-checkconf", "dig", "timeout"];

/// What to run, from the environment.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    runs: usize,
    dnsperf_t: u64,
    fixed_qps: u64,
    out_dir: PathBuf,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let num = crate::env_number;
        Ok(Config {
            runs: num("RUNS", 3)?.clamp(1, 50) as usize,
            dnsperf_t: num("DNSPERF_T", 20)?.clamp(1, 300),
            fixed_qps: num("FIXED_QPS", 10_000)?.clamp(100, 1_000_000),
            out_dir: std::env::var_os("DNS_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results")),
        })
    }
}

/// One run of one server: max rate, then fixed rate. `None` = failed (see `errors`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RunResult {
    max: Option<Measured>,
    fixed: Option<Measured>,
    errors: Vec<String>,
}

/// The run at 80 % of a server's own median peak.
#[derive(Clone, Debug)]
pub(crate) struct At80 {
    rate: u64,
    measured: Option<Measured>,
    error: Option<String>,
}

/// Runs the whole benchmark and writes its results. Call it first in `main`, before any other
/// thread exists (the signal handler relies on every thread inheriting its signal mask). Every
/// namespace and process it made is gone when it returns, also with an error.
#[allow(clippy::disallowed_methods)] // bench: reads the clock
pub fn run() -> Result<(), String> {
    crate::cleanup::install("dns", || {
        let _ = std::fs::remove_dir_all(servers::work_dir());
    });
    let started = Instant::now();
    let cfg = Config::from_env()?;
    check_tools()?;
    let est = cfg.runs as u64 * 2 * (2 * cfg.dnsperf_t + 2) + 2 * (cfg.dnsperf_t + 1) + 10;
    eprintln!(
        "dns: RUNS={} DNSPERF_T={} FIXED_QPS={}; about {est} s",
        cfg.runs, cfg.dnsperf_t, cfg.fixed_qps
    );
    let machine = Machine::probe();
    let date = utc_now();
    let revision = conditions::revision();
    let mut load = vec![format!("at start: {}", conditions::load())];

    let mut bed = Bed::build()?;
    eprintln!(
        "{} both servers answer all {} names with their VIPs",
        stamp(started),
        servers::RECORDS
    );
    for s in Server::ALL {
        check_noerror(&bed, s)?;
    }
    eprintln!(
        "{} one dnsperf pass each: 100 % NOERROR, none lost",
        stamp(started)
    );
    let runs = measured_runs(&mut bed, &cfg, started)?;
    let at80 = at_80pct(&mut bed, &cfg, &runs, started)?;
    let measured_s = started.elapsed().as_secs_f64();
    load.push(format!("after the measured runs: {}", conditions::load()));
    let stats = bed.shoal_stats();
    let unbound_rss_kib = bed.unbound_rss_kib();
    let unbound_conf = bed.unbound_conf.clone();
    drop(bed);
    let leftovers: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| owner_pid(n) == Some(std::process::id()))
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("namespaces left behind: {leftovers:?}"));
    }
    let total_s = started.elapsed().as_secs_f64();

    let report = report::Report {
        cfg: &cfg,
        machine: &machine,
        date: &date,
        revision: &revision,
        conditions: &load,
        runs: &runs,
        at80: &at80,
        stats: &stats,
        unbound_rss_kib,
        unbound_conf: &unbound_conf,
        dnsperf_version: first_line_of(&["sh", "-c", "dnsperf -h 2>&1 | grep -m1 Version"]),
        unbound_version: first_line_of(&["sh", "-c", "unbound -V | head -1"]),
        measured_s,
        total_s,
    };
    let (md, js) = report.write()?;
    println!("{}", report.results_table());
    println!("{}", report.counters_line());
    println!(
        "measured in {measured_s:.0} s, {total_s:.0} s in all; wrote {} and {}",
        md.display(),
        js.display()
    );
    Ok(())
}

/// One dnsperf pass over the query file: every query answered, all NOERROR.
fn check_noerror(bed: &Bed, s: Server) -> Result<(), String> {
    let argv = dnsperf::check_argv(s.addr(), &bed.queries);
    let m = dnsperf::run(bed, s, &argv, 10).map_err(|e| format!("{} check: {e}", s.key()))?;
    let st = &m.stats;
    if st.completed != servers::RECORDS as u64 || st.lost != 0 || st.noerror_pct < 100.0 {
        return Err(format!(
            "{} at {}: one dnsperf pass over the {} names gave {} answered, {} lost, response \
             codes {:?} (want all answered NOERROR); not measuring",
            s.key(),
            s.addr(),
            servers::RECORDS,
            st.completed,
            st.lost,
            st.rcodes
        ));
    }
    Ok(())
}

/// `cfg.runs` runs of each server, interleaved (run 1 of unbound then of shoal, then run 2...).
fn measured_runs(
    bed: &mut Bed,
    cfg: &Config,
    started: Instant,
) -> Result<BTreeMap<Server, Vec<RunResult>>, String> {
    let mut results: BTreeMap<Server, Vec<RunResult>> = BTreeMap::new();
    for run in 1..=cfg.runs {
        for s in Server::ALL {
            let mut r = RunResult::default();
            let max_argv = dnsperf::argv(s.addr(), &bed.queries, cfg.dnsperf_t, None, false);
            r.max = noted(
                &mut r.errors,
                "max rate",
                dnsperf::run(bed, s, &max_argv, cfg.dnsperf_t),
            );
            std::thread::sleep(Duration::from_millis(500));
            let fixed_argv = dnsperf::argv(
                s.addr(),
                &bed.queries,
                cfg.dnsperf_t,
                Some(cfg.fixed_qps),
                true,
            );
            r.fixed = noted(
                &mut r.errors,
                "fixed rate",
                dnsperf::run(bed, s, &fixed_argv, cfg.dnsperf_t),
            );
            alive(bed, s)?;
            eprintln!(
                "{} run {run}/{} {}",
                stamp(started),
                cfg.runs,
                progress(s, &r)
            );
            results.entry(s).or_default().push(r);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(results)
}

/// One run per server at 80 % of its median max-rate qps: are queries lost there?
fn at_80pct(
    bed: &mut Bed,
    cfg: &Config,
    runs: &BTreeMap<Server, Vec<RunResult>>,
    started: Instant,
) -> Result<BTreeMap<Server, At80>, String> {
    let mut out = BTreeMap::new();
    for s in Server::ALL {
        let peaks: Vec<f64> = runs
            .get(&s)
            .map(|v| {
                v.iter()
                    .filter_map(|r| Some(r.max.as_ref()?.stats.qps))
                    .collect()
            })
            .unwrap_or_default();
        let Some(peak) = median(&peaks) else {
            out.insert(
                s,
                At80 {
                    rate: 0,
                    measured: None,
                    error: Some("no max-rate run succeeded".into()),
                },
            );
            continue;
        };
        let rate = ((peak * 0.8).round() as u64).max(1);
        let argv = dnsperf::argv(s.addr(), &bed.queries, cfg.dnsperf_t, Some(rate), false);
        let (measured, error) = match dnsperf::run(bed, s, &argv, cfg.dnsperf_t) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        alive(bed, s)?;
        match &measured {
            Some(m) => eprintln!(
                "{} {:<8} at 80 % of its peak, -Q {rate}: {:.0} qps, {} of {} lost, server CPU {:.0} %",
                stamp(started),
                s.key(),
                m.stats.qps,
                m.stats.lost,
                m.stats.sent,
                m.server_cpu_pct
            ),
            None => eprintln!(
                "{} {:<8} at 80 %: ERROR {}",
                stamp(started),
                s.key(),
                error.as_deref().unwrap_or("")
            ),
        }
        out.insert(
            s,
            At80 {
                rate,
                measured,
                error,
            },
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(out)
}

/// The run's value, or `None` with the failure added to `errors`; a run that is not all
/// NOERROR is kept but noted.
fn noted(errors: &mut Vec<String>, what: &str, res: Result<Measured, String>) -> Option<Measured> {
    match res {
        Ok(m) => {
            if m.stats.noerror_pct < 100.0 {
                errors.push(format!("{what}: response codes {}", m.stats.rcodes));
            }
            Some(m)
        }
        Err(e) => {
            errors.push(format!("{what}: {e}"));
            None
        }
    }
}

/// Fails when unbound died (shoal's server lives in this process).
fn alive(bed: &mut Bed, s: Server) -> Result<(), String> {
    if s == Server::Unbound && !bed.unbound_running() {
        return Err("unbound exited during the runs".into());
    }
    Ok(())
}

/// One progress line of a run.
fn progress(s: Server, r: &RunResult) -> String {
    let mut line = format!("{:<8}", s.key());
    if let Some(m) = &r.max {
        line += &format!(
            " max {:>6.0} qps lost {:<4} cpu srv/dnsperf {:>3.0}/{:>3.0}% {:>5.1} µs/q",
            m.stats.qps,
            m.stats.lost,
            m.server_cpu_pct,
            m.client_cpu_pct,
            m.server_us_per_query()
        );
    }
    if let Some(m) = &r.fixed {
        if let Some(p) = m.stats.latency {
            line += &format!(" | fixed p50 {:.0} p99 {:.0} µs", p.p50, p.p99);
        }
        line += &format!(
            " lost {} cpu {:.0}% {:.1} µs/q",
            m.stats.lost,
            m.server_cpu_pct,
            m.server_us_per_query()
        );
    }
    if !r.errors.is_empty() {
        line += &format!(" ERRORS: {}", r.errors.join("; "));
    }
    line
}

/// `Err` naming the packages unless every program of [`TOOLS`] is on PATH.
fn check_tools() -> Result<(), String> {
    for tool in TOOLS {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!(
                "missing tool {tool}: apt-get install -y dnsperf unbound bind9-dnsutils coreutils"
            ));
        }
    }
    Ok(())
}

/// `[  12.3s]`: the time since `started`, for progress lines.
fn stamp(started: Instant) -> String {
    format!("[{:>5.1}s]", started.elapsed().as_secs_f64())
}
