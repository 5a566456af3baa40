//! One measured run of one path: iperf3 (throughput), then sockperf ping-pong (round trip),
//! each against a server spawned in the server namespace; the tools' command lines and the
//! parsing of what they print.

use super::paths::{Beds, PathDef};
use super::{Config, timeout};
use serde_json::{Value, json};
use std::io;
use std::process::Output;
use std::time::Duration;
use tests::Testbed;
use tests::testbed::wait_until;

pub(super) const IPERF_PORT: u16 = 5201;
const SOCKPERF_PORT: u16 = 11111;
/// Extra seconds a client may take beyond its own duration before `timeout` ends it.
const GRACE_S: u64 = 30;

/// Everything measured in one run of one path. NaN = not measured (see `errors`).
#[derive(Clone, Debug)]
pub(super) struct RunResult {
    pub(super) gbps: f64,
    pub(super) retransmits: f64,
    pub(super) cpu_client: f64,
    pub(super) cpu_server: f64,
    /// % of one core used by the dataplane thread of node 1 and node 2 during the iperf3 run.
    pub(super) dp_cpu: [f64; 2],
    pub(super) rtt_p50: f64,
    pub(super) rtt_p99: f64,
    pub(super) rtt_avg: f64,
    pub(super) round_trips_per_s: f64,
    pub(super) errors: Vec<String>,
}

impl Default for RunResult {
    fn default() -> RunResult {
        RunResult {
            gbps: f64::NAN,
            retransmits: f64::NAN,
            cpu_client: f64::NAN,
            cpu_server: f64::NAN,
            dp_cpu: [f64::NAN; 2],
            rtt_p50: f64::NAN,
            rtt_p99: f64::NAN,
            rtt_avg: f64::NAN,
            round_trips_per_s: f64::NAN,
            errors: Vec::new(),
        }
    }
}

impl RunResult {
    pub(super) fn to_json(&self, run: usize) -> Value {
        json!({
            "run": run,
            "gbps": self.gbps,
            "retransmits": self.retransmits,
            "iperf3_cpu_client_pct": self.cpu_client,
            "iperf3_cpu_server_pct": self.cpu_server,
            "dataplane_cpu_pct": [self.dp_cpu[0], self.dp_cpu[1]],
            "rtt_p50_us": self.rtt_p50,
            "rtt_p99_us": self.rtt_p99,
            "rtt_avg_us": self.rtt_avg,
            "round_trips_per_s": self.round_trips_per_s,
            "errors": self.errors,
        })
    }
}

/// One run of one path: iperf3, then sockperf. Failures are recorded, not fatal.
pub(super) fn measure(beds: &mut Beds, p: &PathDef, cfg: &Config) -> RunResult {
    let mut r = RunResult::default();
    let dst = p.dst.to_string();
    let threads = beds.threads(p.kind);

    let client_argv = iperf_client_argv(&dst, cfg.iperf_t, 1);
    let iperf = with_server(beds, p, &iperf_server_argv(&dst), IPERF_PORT, |beds| {
        let tb = beds.testbed(p.kind);
        let (out, _, dp_cpu) = threads.cpu_during(|| tb.exec(&p.client_ns, &refs(&client_argv)));
        r.dp_cpu = dp_cpu;
        parse_iperf(&out)
    });
    if let Some(i) = noted(&mut r.errors, "iperf3", iperf) {
        r.gbps = i.gbps;
        r.retransmits = i.retransmits;
        r.cpu_client = i.cpu_client;
        r.cpu_server = i.cpu_server;
    }

    let client_argv = sockperf_client_argv(&dst, cfg.sockperf_t);
    let sockperf = with_server(
        beds,
        p,
        &sockperf_server_argv(&dst),
        SOCKPERF_PORT,
        |beds| parse_sockperf(&beds.testbed(p.kind).exec(&p.client_ns, &refs(&client_argv))),
    );
    if let Some(s) = noted(&mut r.errors, "sockperf", sockperf) {
        r.rtt_p50 = s.p50;
        r.rtt_p99 = s.p99;
        r.rtt_avg = s.avg;
        r.round_trips_per_s = s.round_trips_per_s;
    }
    r
}

/// Spawns `server` in the path's server namespace, waits until it listens on TCP `port`, runs
/// `client`, then kills the server whatever `client` returned. `Err` if the server cannot be
/// started.
pub(super) fn with_server<T>(
    beds: &mut Beds,
    p: &PathDef,
    server: &[String],
    port: u16,
    client: impl FnOnce(&Beds) -> Result<T, String>,
) -> io::Result<Result<T, String>> {
    let pid = beds
        .testbed_mut(p.kind)
        .spawn(&p.server_ns, &refs(server))?;
    let res = wait_listening(beds.testbed(p.kind), &p.server_ns, port).and_then(|()| client(beds));
    beds.testbed_mut(p.kind).kill(pid);
    Ok(res)
}

/// The value of a [`with_server`] run of `tool`, or `None` with the failure added to `errors`.
fn noted<T>(errors: &mut Vec<String>, tool: &str, res: io::Result<Result<T, String>>) -> Option<T> {
    match res {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            errors.push(format!("{tool}: {e}"));
            None
        }
        Err(e) => {
            errors.push(format!("{tool} server: {e}"));
            None
        }
    }
}

/// Waits until something listens on TCP `port` in `netns` (`ss`), at most 5 s.
fn wait_listening(tb: &Testbed, netns: &str, port: u16) -> Result<(), String> {
    let filter = format!(":{port}");
    let ok = wait_until(Duration::from_secs(5), || {
        let out = tb.exec(netns, &["ss", "-Hltn", "sport", "=", &filter]);
        out.status.success() && !out.stdout.iter().all(u8::is_ascii_whitespace)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("nothing listens on port {port} after 5 s"))
    }
}

/// `argv` as `&str`s, for [`Testbed::exec`] and [`Testbed::spawn`].
pub(super) fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `argv` under `timeout`: SIGTERM after `secs` seconds, SIGKILL 5 s later.
fn bounded(secs: u64, argv: &[&str]) -> Vec<String> {
    timeout(&["-k", "5", &secs.to_string()], argv)
}

fn owned(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|a| a.to_string()).collect()
}

pub(super) fn iperf_server_argv(dst: &str) -> Vec<String> {
    let port = IPERF_PORT.to_string();
    owned(&["iperf3", "-s", "-1", "-B", dst, "-p", &port])
}

/// A `t`-second iperf3 client whose first `omit` seconds do not count (`-O`), JSON output.
pub(super) fn iperf_client_argv(dst: &str, t: u64, omit: u64) -> Vec<String> {
    let (port, secs, omit) = (IPERF_PORT.to_string(), t.to_string(), omit.to_string());
    let argv = [
        "iperf3", "-c", dst, "-p", &port, "-t", &secs, "-O", &omit, "-J",
    ];
    bounded(t + 1 + GRACE_S, &argv)
}

pub(super) fn sockperf_server_argv(dst: &str) -> Vec<String> {
    let port = SOCKPERF_PORT.to_string();
    owned(&["sockperf", "server", "--tcp", "-i", dst, "-p", &port])
}

pub(super) fn sockperf_client_argv(dst: &str, t: u64) -> Vec<String> {
    let (port, secs) = (SOCKPERF_PORT.to_string(), t.to_string());
    let argv = [
        "sockperf",
        "ping-pong",
        "--tcp",
        "--full-rtt",
        "--no-rdtsc",
        "-i",
        dst,
        "-p",
        &port,
        "-m",
        "64",
        "-t",
        &secs,
    ];
    bounded(t + GRACE_S, &argv)
}

/// What an iperf3 client reports (`-J`).
#[derive(Debug)]
pub(super) struct Iperf {
    pub(super) gbps: f64,
    retransmits: f64,
    cpu_client: f64,
    cpu_server: f64,
}

pub(super) fn parse_iperf(out: &Output) -> Result<Iperf, String> {
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "no JSON ({e}; exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(err.to_string());
    }
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or("no end.sum_received.bits_per_second")?;
    let cpu = &end["cpu_utilization_percent"];
    Ok(Iperf {
        gbps: bps / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_f64().unwrap_or(f64::NAN),
        cpu_client: cpu["host_total"].as_f64().unwrap_or(f64::NAN),
        cpu_server: cpu["remote_total"].as_f64().unwrap_or(f64::NAN),
    })
}

/// What a sockperf ping-pong client reports.
#[derive(Debug)]
struct Sockperf {
    p50: f64,
    p99: f64,
    avg: f64,
    round_trips_per_s: f64,
}

/// Parses sockperf 3.x ping-pong output (`--full-rtt`: values are round trips, µs).
fn parse_sockperf(out: &Output) -> Result<Sockperf, String> {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let number_after = |key: &str| -> Option<f64> {
        let i = text.find(key)? + key.len();
        let rest = text[i..].trim_start_matches([' ', '=']);
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let p50 = number_after("percentile 50.000").ok_or_else(|| {
        format!(
            "no p50 in sockperf output (exit {}): {}",
            out.status,
            text.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
        )
    })?;
    let p99 = number_after("percentile 99.000").unwrap_or(f64::NAN);
    let avg = number_after("avg-rtt")
        .or_else(|| number_after("avg-latency"))
        .unwrap_or(f64::NAN);
    let runtime = number_after("RunTime");
    let received = number_after("ReceivedMessages");
    let round_trips_per_s = match (runtime, received) {
        (Some(t), Some(n)) if t > 0.0 => n / t,
        _ => f64::NAN,
    };
    Ok(Sockperf {
        p50,
        p99,
        avg,
        round_trips_per_s,
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn command_lines() {
        assert_eq!(
            iperf_client_argv("10.77.0.2", 5, 1).join(" "),
            "timeout -k 5 36 iperf3 -c 10.77.0.2 -p 5201 -t 5 -O 1 -J"
        );
        assert_eq!(
            iperf_server_argv("10.77.0.2").join(" "),
            "iperf3 -s -1 -B 10.77.0.2 -p 5201"
        );
        assert_eq!(
            sockperf_client_argv("10.77.0.2", 5).join(" "),
            "timeout -k 5 35 sockperf ping-pong --tcp --full-rtt --no-rdtsc -i 10.77.0.2 -p 11111 \
             -m 64 -t 5"
        );
        assert_eq!(
            sockperf_server_argv("10.77.0.2").join(" "),
            "sockperf server --tcp -i 10.77.0.2 -p 11111"
        );
    }
}
