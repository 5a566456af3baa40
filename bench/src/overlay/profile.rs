//! The profile pass: one extra, unmeasured iperf3 run per shoal path under `perf` (a CPU
//! profile of this process, which holds the dataplane threads, and its syscalls per segment
//! forwarded), and how it reads in the report.

use super::measure::{
    IPERF_PORT, iperf_client_argv, iperf_server_argv, parse_iperf, refs, with_server,
};
use super::paths::{Beds, Kind, PathDef};
use super::report::{counts, json_object, percents};
use super::{perf, stamp};
use dataplane::shell::runtime::Stats;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Length of the profiled iperf3 run, s.
const PROFILE_T: u64 = 8;

/// Syscalls counted one by one (where the kernel has their tracepoint), besides all of them.
const SYSCALLS: [&str; 15] = [
    "read",
    "write",
    "readv",
    "writev",
    "recvmmsg",
    "sendmmsg",
    "recvmsg",
    "sendmsg",
    "recvfrom",
    "sendto",
    "poll",
    "ppoll",
    "epoll_wait",
    "epoll_pwait",
    "ioctl",
];

/// Kernel functions whose inclusive share says which stage of the path the time goes to.
const INCLUSIVE: [(&str, &str); 12] = [
    ("__sys_sendmmsg", "sendmmsg to the underlay"),
    ("__sys_recvmmsg", "recvmmsg from the underlay"),
    ("tun_chr_write_iter", "TAP write"),
    ("tun_chr_read_iter", "TAP read"),
    ("do_epoll_wait", "epoll_wait"),
    (
        "net_rx_action",
        "softirq receive (veth/bridge/stack) run in the thread",
    ),
    ("br_handle_frame", "underlay bridge"),
    (
        "br_nf_pre_routing",
        "bridge netfilter (br_netfilter) on the underlay",
    ),
    ("tcp_v4_rcv", "container TCP receive"),
    ("udp_rcv", "UDP receive"),
    ("skb_copy_datagram_iter", "copy to user"),
    ("copy_page_from_iter", "copy from user"),
];

/// The profile of one shoal path.
#[derive(Debug)]
pub(super) struct Profile {
    kind: Kind,
    iperf_gbps: f64,
    record_cmd: String,
    stat_cmd: String,
    perf_data: PathBuf,
    samples_line: String,
    top: Vec<String>,
    threads: Vec<String>,
    buckets: Vec<(&'static str, f64)>,
    /// Inclusive ("children") share of kernel entry points and stack stages.
    inclusive: Vec<(String, f64)>,
    /// syscall name -> count during the stat window.
    syscalls: Vec<(String, u64)>,
    stat_window_s: f64,
    /// Overlay segments that crossed the wire in the stat window (Σ over nodes of
    /// `encapsulated`: each wire-sized segment is encapsulated once, by its sending node).
    segments: u64,
    /// Deltas of the shell's I/O counters in the window, summed over nodes.
    io_counts: Vec<(&'static str, u64)>,
    dp_cpu: [f64; 2],
}

/// Profiles every shoal path, if perf works here; failures are told on stderr and skipped.
pub(super) fn profile_shoal_paths(
    beds: &mut Beds,
    paths: &[PathDef],
    started: Instant,
) -> Vec<Profile> {
    if let Err(e) = perf::usable() {
        eprintln!("perf not usable, no profile: {e}");
        return Vec::new();
    }
    paths
        .iter()
        .filter(|p| p.kind.is_shoal())
        .filter_map(|p| {
            let prof = profile(beds, p);
            eprintln!("{} profiled {}", stamp(started), p.kind.key());
            prof.map_err(|e| eprintln!("profile of {}: {e}", p.kind.key()))
                .ok()
        })
        .collect()
}

/// One unmeasured iperf3 run on a shoal path (8 s): `perf record` of this process (which holds
/// the dataplane threads) from 1.5 s to 4.5 s, then `perf stat` of its syscalls for 2 s with
/// the dataplane counters read around it.
fn profile(beds: &mut Beds, p: &PathDef) -> Result<Profile, String> {
    let dir = std::env::temp_dir().join("shoal-overlay-bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let perf_data = dir.join(format!("perf-{}.data", p.kind.key()));
    let stat_file = dir.join(format!("syscalls-{}.csv", p.kind.key()));
    let dst = p.dst.to_string();
    let threads = beds.threads(p.kind);
    let record_argv = perf::record_argv(&perf_data, 3)?;
    let stat_argv = perf::stat_syscalls_argv(&stat_file, &SYSCALLS, 2)?;

    // No omitted interval here: the whole run is under load.
    let client_argv = iperf_client_argv(&dst, PROFILE_T, 0);
    let run = with_server(beds, p, &iperf_server_argv(&dst), IPERF_PORT, |beds| {
        let cluster = beds.cluster(p.kind).ok_or("not a shoal path")?;
        let tb = &cluster.testbed;
        std::thread::scope(|s| {
            let client = s.spawn(|| tb.exec(&p.client_ns, &refs(&client_argv)));
            std::thread::sleep(Duration::from_millis(1500));
            let rec = perf::run_bounded(&record_argv).map_err(|e| e.to_string())?;
            perf::check(&rec).map_err(|e| format!("perf record: {e}"))?;
            let samples_line = String::from_utf8_lossy(&rec.stderr)
                .lines()
                .filter(|l| l.contains("samples"))
                .collect::<Vec<_>>()
                .join(" ");
            let s0 = cluster.stats().map_err(|e| e.to_string())?;
            let (st, window, dp_cpu) = threads.cpu_during(|| perf::run_bounded(&stat_argv));
            let st = st.map_err(|e| e.to_string())?;
            let s1 = cluster.stats().map_err(|e| e.to_string())?;
            let out = client.join().map_err(|_| "iperf3 client thread panicked")?;
            perf::check(&st).map_err(|e| format!("perf stat: {e}"))?;
            let delta = |f: fn(&Stats) -> u64| -> u64 {
                let sum = |v: &[Stats]| v.iter().map(f).sum::<u64>();
                sum(&s1).saturating_sub(sum(&s0))
            };
            let io_counts: Vec<(&'static str, u64)> = vec![
                ("TAP reads", delta(|x| x.shell.tap_frames_read)),
                ("of which TSO super-frames", delta(|x| x.shell.tso_frames)),
                ("datagrams received", delta(|x| x.shell.datagrams_received)),
                ("datagrams sent", delta(|x| x.shell.datagrams_sent)),
                (
                    "super-frames written to TAPs",
                    delta(|x| x.shell.coalesced_frames),
                ),
                (
                    "segments merged into them",
                    delta(|x| x.shell.coalesced_segments),
                ),
            ];
            Ok((
                parse_iperf(&out).map(|i| i.gbps).unwrap_or(f64::NAN),
                samples_line,
                delta(|x| x.core.encapsulated),
                io_counts,
                window,
                dp_cpu,
            ))
        })
    });
    let (iperf_gbps, samples_line, segments, io_counts, stat_window_s, dp_cpu) =
        run.map_err(|e| e.to_string())??;

    let all = perf::sample_lines(&perf::report(&perf_data, false, "dso,sym", "0")?);
    let top = all.iter().take(15).cloned().collect();
    let by_thread = perf::sample_lines(&perf::report(&perf_data, false, "comm", "0.5")?);
    let children = perf::report(&perf_data, true, "sym", "0").unwrap_or_default();
    let stat_text = std::fs::read_to_string(&stat_file).unwrap_or_default();
    Ok(Profile {
        kind: p.kind,
        iperf_gbps,
        record_cmd: record_argv.join(" "),
        stat_cmd: stat_argv.join(" "),
        perf_data,
        samples_line,
        top,
        threads: by_thread,
        buckets: buckets(&all),
        inclusive: perf::inclusive(&children, &INCLUSIVE),
        syscalls: perf::syscall_counts(&stat_text),
        stat_window_s,
        segments,
        io_counts,
        dp_cpu,
    })
}

/// Shares of all samples (self time) by kind of work, from the `dso,sym` sample lines.
fn buckets(lines: &[String]) -> Vec<(&'static str, f64)> {
    let share = |matches: &dyn Fn(&str) -> bool| -> f64 {
        lines
            .iter()
            .filter(|l| matches(l))
            .map(|l| perf::pct(l))
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    };
    let any_of = |pats: &[&str]| {
        share(&|l: &str| {
            let low = l.to_ascii_lowercase();
            pats.iter().any(|p| low.contains(p))
        })
    };
    vec![
        ("user space ([.])", share(&|l: &str| l.contains("[.]"))),
        ("kernel ([k])", share(&|l: &str| l.contains("[k]"))),
        (
            "AEAD (chacha/poly1305)",
            any_of(&["chacha", "poly1305", "aead"]),
        ),
        (
            "copies (memcpy/memmove/copy_*_user/iter copies)",
            any_of(&[
                "memcpy",
                "memmove",
                "copy_user",
                "copy_to_user",
                "copy_from_user",
                "_copy_to_iter",
                "_copy_from_iter",
                "copy_page",
            ]),
        ),
        ("checksums (csum*)", any_of(&["csum", "checksum"])),
        (
            "syscall entry/exit",
            any_of(&[
                "entry_syscall",
                "do_syscall_64",
                "syscall_exit",
                "syscall_return",
                "entry_SYSCALL",
            ]),
        ),
    ]
}

impl Profile {
    pub(super) fn markdown(&self) -> String {
        let mut s = format!(
            "### {} (one extra iperf3 run, {:.2} Gbit/s under perf)\n\n",
            self.kind.label(),
            self.iperf_gbps
        );
        s += &format!(
            "`{}` ({}); `perf report --no-children --sort dso,sym`, top 15 by self time:\n\n```\n",
            self.record_cmd, self.samples_line
        );
        for l in &self.top {
            s += l;
            s.push('\n');
        }
        s += "```\n\nBy thread (`--sort comm`): ";
        s += &self.threads.join(", ");
        s += "\n\nShares of all samples: ";
        s += &percents(&self.buckets);
        s += "\n\nInclusive (`perf report --children`) share of samples under: ";
        s += &percents(&self.inclusive);
        let all = self.syscall("all");
        s += &format!(
            "\n\nSyscalls of the process in {:.1} s (`{}`), with dataplane CPU n1/n2 = {:.0}/{:.0}% of a core: ",
            self.stat_window_s, self.stat_cmd, self.dp_cpu[0], self.dp_cpu[1]
        );
        s += &counts(self.syscalls.iter().filter(|(_, n)| *n > 0));
        if self.segments > 0 {
            let per_segment = |n: u64| n as f64 / self.segments as f64;
            s += &format!(
                ". Overlay segments over the wire in that window (Σ `encapsulated`, both \
                 directions): {} ({:.0}/s) → **{:.3} syscalls per segment** (both nodes' \
                 syscalls together)",
                self.segments,
                self.segments as f64 / self.stat_window_s,
                per_segment(all)
            );
            for name in [
                "read",
                "write",
                "recvmmsg",
                "sendmmsg",
                "epoll_wait",
                "poll",
            ] {
                let n = self.syscall(name);
                if n > 0 {
                    s += &format!(", {name} {:.3}", per_segment(n));
                }
            }
            s += ". Shell I/O in the window: ";
            s += &counts(&self.io_counts);
        }
        s += &format!(
            ".\n\n(perf data kept out of the tree: `{}`.)\n",
            self.perf_data.display()
        );
        s
    }

    /// The count of syscall `name` in the stat window (0 if not counted).
    fn syscall(&self, name: &str) -> u64 {
        self.syscalls
            .iter()
            .find(|(k, _)| k == name)
            .map_or(0, |(_, n)| *n)
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "path": self.kind.key(),
            "iperf_gbps_under_perf": self.iperf_gbps,
            "record_cmd": self.record_cmd,
            "top_symbols": self.top,
            "threads": self.threads,
            "inclusive_pct": json_object(&self.inclusive),
            "buckets_pct": json_object(&self.buckets),
            "syscalls": json_object(&self.syscalls),
            "stat_window_s": self.stat_window_s,
            "segments": self.segments,
            "shell_io": json_object(&self.io_counts),
            "dataplane_cpu_pct": [self.dp_cpu[0], self.dp_cpu[1]],
        })
    }
}
