//! Shared helpers of the benchmark programs: summaries of repeated runs (median [min..max]),
//! Markdown tables, and the machine facts every report starts with; [`overlay`], the overlay
//! benchmark itself (`src/bin/overlay.rs` only calls [`overlay::run`]); and [`dns`], the DNS
//! benchmark (`src/bin/dns.rs` calls [`dns::run`]).

/// The agent's idle memory beside a Serf agent's (`src/bin/agent.rs` calls [`agent::run`]).
pub mod agent;
pub mod cleanup;
pub mod dns;
/// The gossip benchmark, shoal next to Serf (`src/bin/gossip.rs` calls [`gossip::run`]).
pub mod gossip;
/// The connection-distribution benchmark (`src/bin/mesh.rs` calls [`mesh::run`]).
pub mod mesh;
pub mod overlay;

use std::process::{Command, Stdio};

/// Median, minimum and maximum of a set of runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many values went in (NaNs are left out).
    pub n: usize,
}

impl Summary {
    /// The summary of `values`, ignoring NaNs; `None` if nothing is left. The median of an
    /// even count is the mean of the two middle values.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// `median [min..max]` with `decimals` digits after the point.
    pub fn fmt(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}..{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }

    /// As JSON: `{"median", "min", "max", "n"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "n": self.n,
        })
    }
}

/// The median of `values` (NaNs ignored), if there is any value.
pub fn median(values: &[f64]) -> Option<f64> {
    Summary::of(values).map(|s| s.median)
}

/// [`Summary::fmt`] of `values`, or `n/a` when there is none.
pub fn fmt_summary(values: &[f64], decimals: usize) -> String {
    Summary::of(values).map_or_else(|| "n/a".to_string(), |s| s.fmt(decimals))
}

/// A Markdown table built row by row.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(header: &[S]) -> Table {
        Table {
            header: header.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty, extra cells are kept.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) -> &mut Table {
        self.rows
            .push(cells.iter().map(|c| c.as_ref().to_string()).collect());
        self
    }

    /// The table as GitHub-flavoured Markdown (pipes in cells are escaped).
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let width = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for i in 0..width {
                s.push(' ');
                s.push_str(&esc(cells.get(i).map_or("", String::as_str)));
                s.push_str(" |");
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.header);
        out.push('|');
        for _ in 0..width {
            out.push_str(" --- |");
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// Facts about the machine a result was measured on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Logical CPUs this process may use (`nproc`).
    pub nproc: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// MemTotal of /proc/meminfo, in MiB.
    pub mem_mib: u64,
}

impl Machine {
    pub fn probe() -> Machine {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        Machine {
            nproc,
            kernel,
            cpu,
            mem_mib,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "nproc": self.nproc,
            "kernel": self.kernel,
            "cpu": self.cpu,
            "mem_mib": self.mem_mib,
        })
    }
}

/// The first line a command prints (stdout, else stderr), e.g. a tool's version; empty if it
/// cannot run.
pub fn first_line_of(argv: &[&str]) -> String {
    let Some((prog, args)) = argv.split_first() else {
        return String::new();
    };
    match Command::new(prog).args(args).stdin(Stdio::null()).output() {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            stdout
                .lines()
                .chain(stderr.lines())
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .to_string()
        }
        Err(_) => String::new(),
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC` (from `date`, so no clock crate).
pub fn utc_now() -> String {
    first_line_of(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"])
}

/// A number from the environment, or `default` when the variable is unset; a value that is
/// not a number is an error that names the variable.
pub fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// The `shoal` binary a benchmark runs: `SHOAL_BIN`, else next to the benchmark's own
/// program (both built with `cargo build --release`), else `target/release/shoal`.
pub fn shoal_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        return p.into();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("shoal")));
    match beside {
        Some(p) if p.exists() => p,
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/shoal"),
    }
}

/// A process's resident memory (VmRSS), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn summary_median_min_max() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, f64::NAN, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.n), (2.5, 4));
        assert!(Summary::of(&[f64::NAN]).is_none());
        assert_eq!(s.fmt(1), "2.5 [1.0..4.0]");
    }

    #[test]
    fn markdown_table() {
        let mut t = Table::new(&["a", "b"]);
        t.row(&["1", "x|y"]).row(&["2"]);
        assert_eq!(
            t.to_markdown(),
            "| a | b |\n| --- | --- |\n| 1 | x\\|y |\n| 2 |  |\n"
        );
    }
}
