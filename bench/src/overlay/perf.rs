//! The `perf` tool: whether it works here, running it (its pid known to the signal handler) and
//! reading what `perf report` and `perf stat` print.

use super::timeout;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// pid of a running `perf`, so the signal handler can end it.
static PERF_PID: AtomicU32 = AtomicU32::new(0);

/// `Ok` if `perf stat` can count `cpu-clock` here.
pub(super) fn usable() -> Result<(), String> {
    let out = Command::new("perf")
        .args(["stat", "-e", "cpu-clock", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("perf: {e} (apt-get install -y linux-perf)"))?;
    check(&out)
}

/// `perf record` of the cpu-clock with call graphs of this process for `secs` seconds, into
/// `out`.
pub(super) fn record_argv(out: &Path, secs: u32) -> Result<Vec<String>, String> {
    let (pid, out, secs) = (std::process::id().to_string(), utf8(out)?, secs.to_string());
    Ok(bounded(&[
        "perf",
        "record",
        "-e",
        "cpu-clock",
        "-g",
        "-p",
        &pid,
        "-o",
        out,
        "--",
        "sleep",
        &secs,
    ]))
}

/// `perf stat` (CSV into `out`) of this process's syscalls for `secs` seconds: all of them
/// (`raw_syscalls:sys_enter`) and each of `syscalls` whose tracepoint exists.
pub(super) fn stat_syscalls_argv(
    out: &Path,
    syscalls: &[&str],
    secs: u32,
) -> Result<Vec<String>, String> {
    let mut events = vec!["raw_syscalls:sys_enter".to_string()];
    events.extend(
        syscalls
            .iter()
            .filter(|s| {
                Path::new(&format!(
                    "/sys/kernel/tracing/events/syscalls/sys_enter_{s}"
                ))
                .exists()
            })
            .map(|s| format!("syscalls:sys_enter_{s}")),
    );
    let events = events.join(",");
    let (pid, out, secs) = (std::process::id().to_string(), utf8(out)?, secs.to_string());
    Ok(bounded(&[
        "perf", "stat", "-x", ",", "-o", out, "-e", &events, "-p", &pid, "--", "sleep", &secs,
    ]))
}

/// `argv` under `timeout 30`.
fn bounded(argv: &[&str]) -> Vec<String> {
    timeout(&["30"], argv)
}

fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str().ok_or_else(|| "path".to_string())
}

/// Runs a perf command line (from [`record_argv`] or [`stat_syscalls_argv`]) outside the
/// testbed, remembering its pid for the signal handler.
pub(super) fn run_bounded(argv: &[String]) -> std::io::Result<Output> {
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    PERF_PID.store(child.id(), Ordering::SeqCst);
    let out = child.wait_with_output();
    PERF_PID.store(0, Ordering::SeqCst);
    out
}

/// The pid of the perf that [`run_bounded`] runs now, if any.
pub(super) fn running() -> Option<u32> {
    Some(PERF_PID.load(Ordering::SeqCst)).filter(|&pid| pid != 0)
}

/// `Ok` if `out` says success, else `Err` with its stderr.
pub(super) fn check(out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `perf report --stdio -g none` of `perf_data`, self (`children == false`) or inclusive
/// time, sorted by `sort`, lines of at least `limit` %. `Err` if perf cannot run.
pub(super) fn report(
    perf_data: &Path,
    children: bool,
    sort: &str,
    limit: &str,
) -> Result<String, String> {
    let out = Command::new("perf")
        .args(["report", "-i"])
        .arg(perf_data)
        .args([
            "--stdio",
            if children {
                "--children"
            } else {
                "--no-children"
            },
            "-g",
            "none",
            "--sort",
            sort,
            "--percent-limit",
            limit,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sample lines of a `perf report` (`12.34% ...`), whitespace collapsed.
pub(super) fn sample_lines(report: &str) -> Vec<String> {
    report
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('%'))
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The percentage a sample line starts with (0 if none).
pub(super) fn pct(line: &str) -> f64 {
    line.split('%')
        .next()
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or(0.0)
}

/// From a `perf report --children --sort sym`: the inclusive share of each of `symbols`
/// (symbol, description) that appears, as (`description (`symbol`)`, %).
pub(super) fn inclusive(report: &str, symbols: &[(&str, &str)]) -> Vec<(String, f64)> {
    symbols
        .iter()
        .filter_map(|(sym, what)| {
            report.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // "Children% Self% [k] symbol"
                (f.len() == 4 && f[3] == *sym).then(|| {
                    (
                        format!("{what} (`{sym}`)"),
                        f[0].trim_end_matches('%').parse().unwrap_or(0.0),
                    )
                })
            })
        })
        .collect()
}

/// The counts of a `perf stat -x ,` file of syscall tracepoints: `syscalls:sys_enter_NAME`
/// as `NAME`, `raw_syscalls:sys_enter` as `all`.
pub(super) fn syscall_counts(stat_csv: &str) -> Vec<(String, u64)> {
    stat_csv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = f.first()?.trim().parse::<u64>().ok()?;
            let name = f.get(2)?.trim();
            let name = name
                .strip_prefix("syscalls:sys_enter_")
                .or_else(|| name.strip_prefix("raw_syscalls:sys_enter").map(|_| "all"))
                .unwrap_or(name);
            Some((name.to_string(), n))
        })
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn report_lines() {
        let report = "# comment 1%\n\n    15.95%  [kernel.kallsyms]  [k] _copy_to_iter\n \
                      6.59%  overlay  [.] tcp_checksum_ok\n";
        let lines = sample_lines(report);
        assert_eq!(
            lines,
            [
                "15.95% [kernel.kallsyms] [k] _copy_to_iter",
                "6.59% overlay [.] tcp_checksum_ok"
            ]
        );
        assert_eq!(pct(&lines[0]), 15.95);
        let children = "    26.20%     0.10%  [k] __sys_sendmmsg\n";
        assert_eq!(
            inclusive(
                children,
                &[("__sys_sendmmsg", "sendmmsg"), ("udp_rcv", "UDP")]
            ),
            [("sendmmsg (`__sys_sendmmsg`)".to_string(), 26.2)]
        );
    }

    #[test]
    fn command_lines() {
        let pid = std::process::id();
        assert_eq!(
            record_argv(Path::new("/tmp/p.data"), 3).unwrap().join(" "),
            format!("timeout 30 perf record -e cpu-clock -g -p {pid} -o /tmp/p.data -- sleep 3")
        );
        let stat = stat_syscalls_argv(Path::new("/tmp/s.csv"), &["read"], 2).unwrap();
        let stat = stat.join(" ");
        assert!(
            stat.starts_with("timeout 30 perf stat -x , -o /tmp/s.csv -e raw_syscalls:sys_enter"),
            "{stat}"
        );
        assert!(stat.ends_with(&format!(" -p {pid} -- sleep 2")), "{stat}");
    }

    #[test]
    fn stat_csv() {
        let csv = "# started on x\n\n137513,,raw_syscalls:sys_enter,2000,100.00,,\n\
                   49803,,syscalls:sys_enter_read,2000,100.00,,\n";
        assert_eq!(
            syscall_counts(csv),
            [("all".to_string(), 137513), ("read".to_string(), 49803)]
        );
    }
}
