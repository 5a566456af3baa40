//! dnsperf: the command lines (the anchor's: 1 client, 1 thread, 100 queries outstanding),
//! one bounded run inside the namespace with the CPU time of both ends, and the parsing of
//! what dnsperf prints (its statistics, and with `-v` every answer's latency).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

use super::servers::{Bed, Server};

/// Seconds a dnsperf run may take beyond its `-l` before `timeout` kills it.
const GRACE_S: u64 = 30;

/// dnsperf's command line against `server`: max rate (`rate` = None) or `-Q rate`, for `t`
/// seconds, with `-v` (one line per answer) when `verbose`.
pub(super) fn argv(
    server: Ipv4Addr,
    queries: &Path,
    t: u64,
    rate: Option<u64>,
    verbose: bool,
) -> Vec<String> {
    let mut argv: Vec<String> = [
        "dnsperf",
        "-s",
        &server.to_string(),
        "-d",
        &queries.to_string_lossy(),
        "-l",
        &t.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(rate) = rate {
        argv.extend(["-Q".to_string(), rate.to_string()]);
    }
    if verbose {
        argv.push("-v".into());
    }
    argv
}

/// The one pass over the query file that checks a server before anything is measured.
pub(super) fn check_argv(server: Ipv4Addr, queries: &Path) -> Vec<String> {
    [
        "dnsperf",
        "-s",
        &server.to_string(),
        "-d",
        &queries.to_string_lossy(),
        "-n",
        "1",
        "-l",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// dnsperf's own figures of one run.
#[derive(Clone, Debug, Default)]
pub(super) struct Stats {
    pub(super) sent: u64,
    pub(super) completed: u64,
    pub(super) lost: u64,
    /// `Response codes:` as printed, e.g. `NOERROR 1234 (100.00%)`.
    pub(super) rcodes: String,
    /// The share of completed queries answered NOERROR, %.
    pub(super) noerror_pct: f64,
    pub(super) run_s: f64,
    pub(super) qps: f64,
    pub(super) avg_latency_us: f64,
    /// From the `-v` lines (answered queries only; lost ones have no latency).
    pub(super) latency: Option<Percentiles>,
}

/// Latency percentiles of the answered queries, µs (the anchor's method: sorted, index
/// `round(p/100 × (n-1))`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) n: usize,
}

/// One dnsperf run and what both ends spent on it.
#[derive(Clone, Debug)]
pub(super) struct Measured {
    pub(super) stats: Stats,
    pub(super) wall_s: f64,
    /// The server's CPU during the run, % of one core.
    pub(super) server_cpu_pct: f64,
    /// dnsperf's CPU (user + system over the run), % of one core.
    pub(super) client_cpu_pct: f64,
}

impl Measured {
    /// The server's CPU time per answered query, µs.
    pub(super) fn server_us_per_query(&self) -> f64 {
        self.server_cpu_pct / 100.0 * self.wall_s * 1e6 / self.stats.completed as f64
    }
}

/// Runs dnsperf (`argv`, with `-l t`) against `server` inside the namespace under `timeout`,
/// reading the server's CPU time around it and dnsperf's from this process's children's usage.
#[allow(clippy::disallowed_methods)] // bench: reads the clock
pub(super) fn run(bed: &Bed, server: Server, argv: &[String], t: u64) -> Result<Measured, String> {
    let limit = (t + GRACE_S).to_string();
    let mut full: Vec<&str> = vec!["timeout", "-k", "5", &limit];
    full.extend(argv.iter().map(String::as_str));
    let cpu0 = bed.cpu_s(server);
    let children0 = children_cpu_s();
    let t0 = Instant::now();
    let out = bed.exec(&full);
    let wall_s = t0.elapsed().as_secs_f64();
    let children1 = children_cpu_s();
    let cpu1 = bed.cpu_s(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => {}
        Some(124) | Some(137) | None => {
            return Err(format!(
                "dnsperf overran its {limit} s limit and was killed: {}",
                argv.join(" ")
            ));
        }
        Some(code) => {
            return Err(format!(
                "dnsperf exited {code}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let stats = parse(&stdout)?;
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (b - a) / wall_s * 100.0,
        _ => f64::NAN,
    };
    // dnsperf's own run time, not the wall time around `ip netns exec` and `timeout`.
    let client_cpu_pct = (children1 - children0) / stats.run_s.max(1e-9) * 100.0;
    Ok(Measured {
        server_cpu_pct: pct(cpu0, cpu1),
        client_cpu_pct,
        wall_s,
        stats,
    })
}

/// dnsperf's output: the statistics block, and the latencies of `> RCODE name type seconds`.
pub(super) fn parse(out: &str) -> Result<Stats, String> {
    let field = |label: &str| -> Option<&str> {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .map(str::trim)
    };
    let first_num = |label: &str| -> Option<f64> {
        field(label)?
            .split_whitespace()
            .next()?
            .trim_end_matches(',')
            .parse()
            .ok()
    };
    let need = |label: &str| {
        first_num(label).ok_or_else(|| {
            format!(
                "dnsperf printed no {label:?}; its output ends: {}",
                tail(out, 8)
            )
        })
    };
    let rcodes = field("Response codes:").unwrap_or("").to_string();
    let noerror_pct = noerror_pct(&rcodes);
    let mut latencies: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // `> T name type` is a query that timed out (lost): it has no latency.
            if f.len() < 4 || f[0] == "T" {
                return None;
            }
            f.last()?.parse::<f64>().ok()
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(Stats {
        sent: need("Queries sent:")? as u64,
        completed: need("Queries completed:")? as u64,
        lost: need("Queries lost:")? as u64,
        rcodes,
        noerror_pct,
        run_s: need("Run time (s):")?,
        qps: need("Queries per second:")?,
        avg_latency_us: first_num("Average Latency (s):").unwrap_or(f64::NAN) * 1e6,
        latency: percentiles(&latencies),
    })
}

/// The NOERROR share of `NOERROR 1234 (99.00%) SERVFAIL 12 (1.00%)`; 0 if absent.
fn noerror_pct(rcodes: &str) -> f64 {
    let f: Vec<&str> = rcodes.split_whitespace().collect();
    f.iter()
        .position(|w| *w == "NOERROR")
        .and_then(|i| f.get(i + 2))
        .and_then(|p| {
            p.trim_matches(|c| matches!(c, '(' | ')' | '%' | ','))
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Percentiles of sorted latencies in seconds, as µs.
fn percentiles(sorted_s: &[f64]) -> Option<Percentiles> {
    let n = sorted_s.len();
    if n == 0 {
        return None;
    }
    let at = |p: f64| {
        let i = (p / 100.0 * (n - 1) as f64).round() as usize;
        sorted_s[i.min(n - 1)] * 1e6
    };
    Some(Percentiles {
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
        p999: at(99.9),
        n,
    })
}

/// CPU seconds (user + system) of this process's children that ended and were waited for,
/// with their own waited-for descendants (`timeout` waits for dnsperf).
fn children_cpu_s() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `struct rusage` to the pointer, which points to one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: all-zero bytes are a valid rusage (integers only), and getrusage filled it.
    let ru = unsafe { ru.assume_init() };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The last `n` lines of `s`, joined with ` / `.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod unit {
    use super::*;

    const OUT: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.53 -d q.txt -l 1 -v
> NOERROR svc-0001.anc.test A 0.000058
> NOERROR svc-0002.anc.test A 0.000042
> T svc-0003.anc.test A
> SERVFAIL svc-0004.anc.test A 0.000100
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 2 (66.67%), SERVFAIL 1 (33.33%)
  Average packet size:  request 35, response 51
  Run time (s):         1.000123
  Queries per second:   2.999631

  Average Latency (s):  0.000067 (min 0.000042, max 0.000100)
  Latency StdDev (s):   0.000025
";

    #[test]
    fn parses_statistics_and_latencies() {
        let s = parse(OUT).unwrap();
        assert_eq!((s.sent, s.completed, s.lost), (4, 3, 1));
        assert!((s.noerror_pct - 66.67).abs() < 1e-9);
        assert!((s.qps - 2.999631).abs() < 1e-9);
        assert!((s.avg_latency_us - 67.0).abs() < 1e-6);
        let p = s.latency.unwrap();
        assert_eq!(p.n, 3);
        assert!((p.p50 - 58.0).abs() < 1e-6);
        assert!((p.p99 - 100.0).abs() < 1e-6);
    }

    #[test]
    fn missing_statistics_is_an_error() {
        assert!(parse("dnsperf: cannot open q.txt").is_err());
    }

    #[test]
    fn noerror_share() {
        assert_eq!(noerror_pct("NOERROR 1234 (100.00%)"), 100.0);
        assert_eq!(noerror_pct("SERVFAIL 3 (100.00%)"), 0.0);
        assert_eq!(noerror_pct(""), 0.0);
    }
}
