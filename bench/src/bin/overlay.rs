//! Overlay data path, end to end: single-stream TCP throughput (iperf3) and TCP request/response
//! round trip (sockperf ping-pong, 64 B) over four paths built in one run, on the same
//! topology shape (two node namespaces on the testbed's underlay bridge):
//!
//! 1. `veth`: the underlay itself (node eth0 -> veth -> bridge -> veth -> node eth0), no overlay;
//! 2. `kernel_vxlan`: a kernel `vxlan` device in each node (VNI 4097, UDP 4789, static FDB and
//!    neighbours, MTU 1450), as in `shared/anchors/1b_vxlan.sh`;
//! 3. `plain`: a 2-node shoal [`Cluster`] with a plain network, one container per node;
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
//! Run: `cargo build -p bench --release --bin overlay && sudo target/release/overlay`.
#![allow(clippy::disallowed_methods)] // A benchmark reads the clock; that is its job.

use bench::{Machine, Summary, Table, first_line_of, fmt_summary, median, utc_now};
use dataplane::shell::runtime::Stats;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tests::Testbed;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, NetworkSpec};
use tests::testbed::{DEFAULT_MTU, DEFAULT_UNDERLAY, Node, list_netns, owner_pid, wait_until};

const IPERF_PORT: u16 = 5201;
const SOCKPERF_PORT: u16 = 11111;
const VNI: u32 = 4097;
const KVX_MTU: u32 = 1450;
const KVX_IPS: [&str; 2] = ["10.77.0.1", "10.77.0.2"];
const KVX_MACS: [&str; 2] = ["02:a7:00:00:00:01", "02:a7:00:00:00:02"];
/// The shoal networks use the same subnet as the kernel VXLAN (.1 is the gateway).
const SHOAL_SUBNET: &str = "10.77.0.0/24";
const SHOAL_HOSTS: [u32; 2] = [2, 3];
/// Extra seconds a client may take beyond its own duration before `timeout` ends it.
const GRACE_S: u64 = 30;
/// Targets against kernel VXLAN.
const PLAIN_GBPS_TARGET: f64 = 0.8;
const SEALED_GBPS_TARGET: f64 = 0.5;
const RTT_TARGET: f64 = 1.5;

/// pid of a running `perf`, so the signal handler can end it.
static PERF_PID: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Veth,
    KernelVxlan,
    Plain,
    Sealed,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Veth, Kind::KernelVxlan, Kind::Plain, Kind::Sealed];

    fn key(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::KernelVxlan => "kernel_vxlan",
            Kind::Plain => "plain",
            Kind::Sealed => "sealed",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Veth => "underlay (veth+bridge), no overlay",
            Kind::KernelVxlan => "kernel VXLAN",
            Kind::Plain => "shoal plain VXLAN",
            Kind::Sealed => "shoal sealed VXLAN",
        }
    }

    fn is_shoal(self) -> bool {
        matches!(self, Kind::Plain | Kind::Sealed)
    }
}

/// One path: where the client and server run and the server's address.
#[derive(Clone, Debug)]
struct PathDef {
    kind: Kind,
    client_ns: String,
    server_ns: String,
    /// Display names of the client and server ends (`k1`, `c2`, ...).
    client_name: String,
    server_name: String,
    dst: Ipv4Addr,
    mtu: u32,
}

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

/// Everything measured in one run of one path. NaN = not measured (see `errors`).
#[derive(Clone, Debug)]
struct RunResult {
    gbps: f64,
    retransmits: f64,
    cpu_client: f64,
    cpu_server: f64,
    /// % of one core used by the dataplane thread of node 1 and node 2 during the iperf3 run.
    dp_cpu: [f64; 2],
    rtt_p50: f64,
    rtt_p99: f64,
    rtt_avg: f64,
    round_trips_per_s: f64,
    errors: Vec<String>,
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
    fn to_json(&self, run: usize) -> Value {
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

/// The three testbeds: the kernel one (veth and kernel VXLAN paths) and two shoal clusters.
/// Each removes its namespaces and kills its processes on drop.
#[derive(Debug)]
struct Beds {
    kernel: Testbed,
    plain: Cluster,
    sealed: Cluster,
    /// Dataplane thread ids of each cluster, by node index.
    plain_threads: [Option<u32>; 2],
    sealed_threads: [Option<u32>; 2],
    kvx_setup: Vec<String>,
    /// `net.bridge.bridge-nf-call-iptables` in the underlay namespace.
    br_nf_call_iptables: String,
}

impl Beds {
    fn testbed(&mut self, kind: Kind) -> &mut Testbed {
        match kind {
            Kind::Veth | Kind::KernelVxlan => &mut self.kernel,
            Kind::Plain => &mut self.plain.testbed,
            Kind::Sealed => &mut self.sealed.testbed,
        }
    }

    fn cluster(&self, kind: Kind) -> Option<&Cluster> {
        match kind {
            Kind::Plain => Some(&self.plain),
            Kind::Sealed => Some(&self.sealed),
            _ => None,
        }
    }

    fn threads(&self, kind: Kind) -> [Option<u32>; 2] {
        match kind {
            Kind::Plain => self.plain_threads,
            Kind::Sealed => self.sealed_threads,
            _ => [None, None],
        }
    }
}

fn main() {
    install_signal_cleanup();
    let started = Instant::now();
    let cfg = Config::from_env();
    for tool in [
        "iperf3", "sockperf", "ss", "ip", "bridge", "ping", "timeout",
    ] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "missing tool {tool}: apt-get install -y iperf3 sockperf iproute2 iputils-ping"
        );
    }
    let est = cfg.runs as u64 * 4 * (cfg.iperf_t + 1 + cfg.sockperf_t + 2)
        + if cfg.profile { 20 } else { 0 };
    eprintln!(
        "overlay: RUNS={} IPERF_T={} SOCKPERF_T={} PROFILE={}; about {est} s",
        cfg.runs, cfg.iperf_t, cfg.sockperf_t, cfg.profile as u8
    );
    let machine = Machine::probe();
    let date = utc_now();
    let revision = revision();
    let clk_tck: f64 = first_line_of(&["getconf", "CLK_TCK"])
        .parse()
        .unwrap_or(100.0);

    let mut conditions = vec![format!("at start: {}", load_conditions())];
    let (mut beds, paths) = build();
    eprintln!(
        "[{:>5.1}s] topology up; all four paths answer ping",
        started.elapsed().as_secs_f64()
    );

    // Measured runs, interleaved.
    let mut results: BTreeMap<Kind, Vec<RunResult>> = BTreeMap::new();
    for run in 1..=cfg.runs {
        for p in &paths {
            let r = measure(&mut beds, p, &cfg, clk_tck);
            eprintln!(
                "[{:>5.1}s] run {run}/{} {:<12} {:>6.3} Gbit/s retr={:<5} rtt p50={:>6.1} p99={:>6.1} µs dp cpu n1/n2={:.0}/{:.0}%{}",
                started.elapsed().as_secs_f64(),
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
    let measured_s = started.elapsed().as_secs_f64();
    conditions.push(format!("after the measured runs: {}", load_conditions()));

    // Counters after the measured runs (before the profile pass adds to them).
    let mut counters: BTreeMap<Kind, Vec<Stats>> = BTreeMap::new();
    let mut kernel_drops: BTreeMap<Kind, Vec<KernelCounters>> = BTreeMap::new();
    for p in paths.iter().filter(|p| p.kind.is_shoal()) {
        let cluster = beds.cluster(p.kind).expect("a shoal path has a cluster");
        counters.insert(p.kind, cluster.stats().unwrap_or_default());
        kernel_drops.insert(p.kind, kernel_side_drops(cluster));
    }

    let profiles: Vec<Profile> = if cfg.profile {
        match perf_usable() {
            Ok(()) => paths
                .iter()
                .filter(|p| p.kind.is_shoal())
                .filter_map(|p| {
                    let prof = profile(&mut beds, p, clk_tck);
                    eprintln!(
                        "[{:>5.1}s] profiled {}",
                        started.elapsed().as_secs_f64(),
                        p.kind.key()
                    );
                    prof.map_err(|e| eprintln!("profile of {}: {e}", p.kind.key()))
                        .ok()
                })
                .collect(),
            Err(e) => {
                eprintln!("perf not usable, no profile: {e}");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };

    let kvx_setup = beds.kvx_setup.clone();
    let br_nf = beds.br_nf_call_iptables.clone();
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

    let report = Report {
        cfg: &cfg,
        machine: &machine,
        date: &date,
        paths: &paths,
        results: &results,
        counters: &counters,
        kernel_drops: &kernel_drops,
        profiles: &profiles,
        kvx_setup: &kvx_setup,
        br_nf: &br_nf,
        revision: &revision,
        conditions: &conditions,
        measured_s,
        total_s,
    };
    std::fs::create_dir_all(&cfg.out_dir).expect("results directory");
    let md = report.markdown();
    let js = report.json();
    let md_path = cfg.out_dir.join("overlay.md");
    let js_path = cfg.out_dir.join("overlay.json");
    std::fs::write(&md_path, &md).expect("write overlay.md");
    std::fs::write(
        &js_path,
        serde_json::to_string_pretty(&js).expect("json") + "\n",
    )
    .expect("write overlay.json");
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

/// Which code was measured: the commit, files of the tree that differ from it (outside
/// bench/), and when this binary was built.
fn revision() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let head = first_line_of(&["git", "-C", root, "log", "-1", "--format=%h %s"]);
    let dirty: Vec<String> = Command::new("git")
        .args(["-C", root, "status", "--porcelain", "--", ".", ":!bench"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    let built = std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.to_str()
                .map(|p| first_line_of(&["date", "-u", "-r", p, "+%F %T UTC"]))
        })
        .unwrap_or_default();
    format!(
        "commit `{head}`; outside bench/ the tree {}; binary built {built}",
        if dirty.is_empty() {
            "matches it".to_string()
        } else {
            format!("differs: `{}`", dirty.join("`, `"))
        }
    )
}

/// What else loads the machine: the load average and other processes' testbed namespaces.
fn load_conditions() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "?".into());
    let me = std::process::id();
    let mut others: Vec<u32> = list_netns()
        .iter()
        .filter_map(|n| owner_pid(n))
        .filter(|p| *p != me)
        .collect();
    let namespaces = others.len();
    others.sort_unstable();
    others.dedup();
    format!(
        "load average {load}, {namespaces} testbed namespaces of {} other processes",
        others.len()
    )
}

/// Builds the three testbeds and checks every path with a ping.
fn build() -> (Beds, Vec<PathDef>) {
    // Kernel side: two nodes on an underlay bridge, a vxlan device in each.
    let mut kernel = Testbed::new("overlay-bench-kernel");
    kernel.add_underlay(DEFAULT_UNDERLAY.parse().expect("valid subnet"));
    let k = [kernel.add_node("k1"), kernel.add_node("k2")];
    let kvx_setup = setup_kernel_vxlan(&kernel, &k);
    let br_nf_call_iptables = kernel
        .underlay_netns()
        .map(|ns| {
            let out = kernel.exec(ns, &["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "n/a".into());

    let spec = |name: &'static str, encrypted: bool| ClusterSpec {
        nodes: 2,
        underlay_mtu: DEFAULT_MTU,
        offload: true,
        networks: vec![NetworkSpec::new(name, VNI, SHOAL_SUBNET, encrypted)],
        containers: vec![
            ContainerSpec {
                name: "c1",
                node: 0,
                attachments: vec![(0, SHOAL_HOSTS[0])],
            },
            ContainerSpec {
                name: "c2",
                node: 1,
                attachments: vec![(0, SHOAL_HOSTS[1])],
            },
        ],
    };
    let before = dataplane_threads();
    let plain = Cluster::start("overlay-bench-plain", spec("plain", false)).expect("plain cluster");
    let mid = dataplane_threads();
    let sealed =
        Cluster::start("overlay-bench-sealed", spec("sealed", true)).expect("sealed cluster");
    let after = dataplane_threads();
    let new_threads = |old: &BTreeMap<u32, String>, new: &BTreeMap<u32, String>| {
        let mut by_node = [None, None];
        for (tid, comm) in new.iter().filter(|(t, _)| !old.contains_key(t)) {
            match comm.as_str() {
                "dataplane-1" => by_node[0] = Some(*tid),
                "dataplane-2" => by_node[1] = Some(*tid),
                _ => {}
            }
        }
        by_node
    };
    let plain_threads = new_threads(&before, &mid);
    let sealed_threads = new_threads(&mid, &after);

    let mut paths = vec![
        PathDef {
            kind: Kind::Veth,
            client_ns: k[0].netns_name.clone(),
            server_ns: k[1].netns_name.clone(),
            client_name: "k1".into(),
            server_name: "k2".into(),
            dst: k[1].underlay_ip,
            mtu: k[1].mtu,
        },
        PathDef {
            kind: Kind::KernelVxlan,
            client_ns: k[0].netns_name.clone(),
            server_ns: k[1].netns_name.clone(),
            client_name: "k1".into(),
            server_name: "k2".into(),
            dst: KVX_IPS[1].parse().expect("valid"),
            mtu: KVX_MTU,
        },
    ];
    for (kind, cluster) in [(Kind::Plain, &plain), (Kind::Sealed, &sealed)] {
        let net = cluster.spec.networks[0].name;
        paths.push(PathDef {
            kind,
            client_ns: cluster.container("c1").netns_name.clone(),
            server_ns: cluster.container("c2").netns_name.clone(),
            client_name: "c1".into(),
            server_name: "c2".into(),
            dst: cluster.ip("c2", net),
            mtu: cluster.nodes[1]
                .dataplane
                .overlay_mtu(cluster.spec.networks[0].encrypted),
        });
    }
    let beds = Beds {
        kernel,
        plain,
        sealed,
        plain_threads,
        sealed_threads,
        kvx_setup,
        br_nf_call_iptables,
    };
    for p in &paths {
        let dst = p.dst.to_string();
        let tb = match p.kind {
            Kind::Veth | Kind::KernelVxlan => &beds.kernel,
            Kind::Plain => &beds.plain.testbed,
            Kind::Sealed => &beds.sealed.testbed,
        };
        let out = tb.exec(
            &p.client_ns,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", &dst],
        );
        assert!(
            out.status.success(),
            "{}: {} cannot ping {dst}: {}",
            p.kind.key(),
            p.client_name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    (beds, paths)
}

/// A kernel vxlan device in each node (as `shared/anchors/lib.sh` `setup_vxlan`, with the
/// testbed's underlay). Returns the commands, for the report.
fn setup_kernel_vxlan(tb: &Testbed, k: &[Node; 2]) -> Vec<String> {
    let mut log = Vec::new();
    for side in 0..2 {
        let me = &k[side];
        let peer = &k[1 - side];
        let local = me.underlay_ip.to_string();
        let remote = peer.underlay_ip.to_string();
        let cidr = format!("{}/24", KVX_IPS[side]);
        let vni = VNI.to_string();
        let mtu = KVX_MTU.to_string();
        let cmds: [Vec<&str>; 7] = [
            vec![
                "ip",
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                &vni,
                "dstport",
                "4789",
                "local",
                &local,
                "dev",
                &me.underlay_if,
                "nolearning",
            ],
            vec![
                "ip",
                "link",
                "set",
                "vx0",
                "address",
                KVX_MACS[side],
                "mtu",
                &mtu,
            ],
            vec!["ip", "addr", "add", &cidr, "dev", "vx0"],
            vec!["ip", "link", "set", "vx0", "up"],
            vec![
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                &remote,
            ],
            vec![
                "bridge",
                "fdb",
                "add",
                KVX_MACS[1 - side],
                "dev",
                "vx0",
                "dst",
                &remote,
                "static",
            ],
            vec![
                "ip",
                "neigh",
                "replace",
                KVX_IPS[1 - side],
                "lladdr",
                KVX_MACS[1 - side],
                "dev",
                "vx0",
                "nud",
                "permanent",
            ],
        ];
        for argv in &cmds {
            tb.exec_ok(&me.netns_name, argv);
            log.push(format!("[{}] {}", me.name, argv.join(" ")));
        }
    }
    log
}

fn iperf_client_argv(dst: &str, t: u64) -> Vec<String> {
    let mut v: Vec<String> = ["timeout", "-k", "5"].map(String::from).to_vec();
    v.push((t + 1 + GRACE_S).to_string());
    v.extend(
        [
            "iperf3",
            "-c",
            dst,
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &t.to_string(),
            "-O",
            "1",
            "-J",
        ]
        .map(String::from),
    );
    v
}

fn iperf_server_argv(dst: &str) -> Vec<String> {
    [
        "iperf3",
        "-s",
        "-1",
        "-B",
        dst,
        "-p",
        &IPERF_PORT.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn sockperf_client_argv(dst: &str, t: u64) -> Vec<String> {
    let mut v: Vec<String> = ["timeout", "-k", "5"].map(String::from).to_vec();
    v.push((t + GRACE_S).to_string());
    v.extend(
        [
            "sockperf",
            "ping-pong",
            "--tcp",
            "--full-rtt",
            "--no-rdtsc",
            "-i",
            dst,
            "-p",
            &SOCKPERF_PORT.to_string(),
            "-m",
            "64",
            "-t",
            &t.to_string(),
        ]
        .map(String::from),
    );
    v
}

fn sockperf_server_argv(dst: &str) -> Vec<String> {
    [
        "sockperf",
        "server",
        "--tcp",
        "-i",
        dst,
        "-p",
        &SOCKPERF_PORT.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
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

/// One run of one path: iperf3, then sockperf. Failures are recorded, not fatal.
fn measure(beds: &mut Beds, p: &PathDef, cfg: &Config, clk_tck: f64) -> RunResult {
    let mut r = RunResult::default();
    let threads = beds.threads(p.kind);
    let tb = beds.testbed(p.kind);
    let dst = p.dst.to_string();

    // iperf3
    match tb.spawn(&p.server_ns, &refs(&iperf_server_argv(&dst))) {
        Err(e) => r.errors.push(format!("iperf3 server: {e}")),
        Ok(pid) => {
            let res = wait_listening(tb, &p.server_ns, IPERF_PORT).and_then(|()| {
                let cpu0 = threads.map(|t| t.and_then(thread_cpu_ticks));
                let t0 = Instant::now();
                let out = tb.exec(&p.client_ns, &refs(&iperf_client_argv(&dst, cfg.iperf_t)));
                let wall = t0.elapsed().as_secs_f64();
                let cpu1 = threads.map(|t| t.and_then(thread_cpu_ticks));
                for i in 0..2 {
                    if let (Some(a), Some(b)) = (cpu0[i], cpu1[i]) {
                        r.dp_cpu[i] = (b - a) as f64 / clk_tck / wall * 100.0;
                    }
                }
                parse_iperf(&out)
            });
            tb.kill(pid);
            match res {
                Ok(i) => {
                    r.gbps = i.gbps;
                    r.retransmits = i.retransmits;
                    r.cpu_client = i.cpu_client;
                    r.cpu_server = i.cpu_server;
                }
                Err(e) => r.errors.push(format!("iperf3: {e}")),
            }
        }
    }

    // sockperf
    match tb.spawn(&p.server_ns, &refs(&sockperf_server_argv(&dst))) {
        Err(e) => r.errors.push(format!("sockperf server: {e}")),
        Ok(pid) => {
            let res = wait_listening(tb, &p.server_ns, SOCKPERF_PORT).and_then(|()| {
                let out = tb.exec(
                    &p.client_ns,
                    &refs(&sockperf_client_argv(&dst, cfg.sockperf_t)),
                );
                parse_sockperf(&out)
            });
            tb.kill(pid);
            match res {
                Ok(s) => {
                    r.rtt_p50 = s.p50;
                    r.rtt_p99 = s.p99;
                    r.rtt_avg = s.avg;
                    r.round_trips_per_s = s.round_trips_per_s;
                }
                Err(e) => r.errors.push(format!("sockperf: {e}")),
            }
        }
    }
    r
}

#[derive(Debug)]
struct Iperf {
    gbps: f64,
    retransmits: f64,
    cpu_client: f64,
    cpu_server: f64,
}

fn parse_iperf(out: &Output) -> Result<Iperf, String> {
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

/// This process's dataplane threads: tid -> name.
fn dataplane_threads() -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm.starts_with("dataplane-") {
            out.insert(tid, comm.to_string());
        }
    }
    out
}

/// utime + stime of one of our threads, in clock ticks.
fn thread_cpu_ticks(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// One device's or socket's kernel counters: (what, [(counter, value)]).
type KernelCounters = (String, Vec<(String, u64)>);

/// Kernel-side drop counters around the dataplane: each container's TAP (`eth0`) TX/RX
/// drops, each node's UDP socket errors.
fn kernel_side_drops(cluster: &Cluster) -> Vec<KernelCounters> {
    let tb = &cluster.testbed;
    let mut out = Vec::new();
    for (c, spec) in cluster.containers.iter().zip(&cluster.spec.containers) {
        let o = tb.exec(
            &c.netns_name,
            &["ip", "-j", "-s", "link", "show", "dev", "eth0"],
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let s = &v[0]["stats64"];
        let get = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
        out.push((
            format!("{} eth0 (TAP)", spec.name),
            vec![
                ("tx_packets".into(), get("tx", "packets")),
                ("tx_dropped".into(), get("tx", "dropped")),
                ("rx_packets".into(), get("rx", "packets")),
                ("rx_dropped".into(), get("rx", "dropped")),
            ],
        ));
    }
    for (i, n) in cluster.nodes.iter().enumerate() {
        let o = tb.exec(&n.node.netns_name, &["cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&o.stdout);
        let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
        let mut vals = Vec::new();
        if let [names, values] = udp[..] {
            for (k, v) in names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
            {
                if matches!(
                    k,
                    "InDatagrams" | "InErrors" | "RcvbufErrors" | "SndbufErrors" | "OutDatagrams"
                ) {
                    vals.push((k.to_string(), v.parse().unwrap_or(0)));
                }
            }
        }
        out.push((format!("n{} UDP", i + 1), vals));
    }
    out
}

fn stats_rows(stats: &Stats) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = vec![
        ("tap_frames_read".into(), stats.shell.tap_frames_read),
        ("encapsulated".into(), stats.core.encapsulated),
        ("datagrams_sent".into(), stats.shell.datagrams_sent),
        ("datagrams_received".into(), stats.shell.datagrams_received),
        ("decapsulated".into(), stats.core.decapsulated),
        ("local_delivered".into(), stats.core.local_delivered),
        ("arp_replies".into(), stats.core.arp_replies),
        ("icmp_rejects".into(), stats.core.icmp_rejects),
        ("mss_clamped".into(), stats.core.mss_clamped),
        ("send_errors".into(), stats.shell.send_errors),
        ("tap_write_errors".into(), stats.shell.tap_write_errors),
        ("no_tap".into(), stats.shell.no_tap),
        ("send_backlog_drops".into(), stats.shell.send_backlog_drops),
        ("offload_errors".into(), stats.shell.offload_errors),
        (
            "tso_frames (TAP reads cut into segments)".into(),
            stats.shell.tso_frames,
        ),
        (
            "coalesced_frames (super-frames written to TAPs)".into(),
            stats.shell.coalesced_frames,
        ),
        ("coalesced_segments".into(), stats.shell.coalesced_segments),
        ("drops (total)".into(), stats.core.total_drops()),
    ];
    v.extend(
        stats
            .core
            .drop_counts()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (format!("drop: {r:?}"), n)),
    );
    v
}

// ---------------------------------------------------------------------------------------------
// Profile pass

#[derive(Debug)]
struct Profile {
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

fn perf_usable() -> Result<(), String> {
    let out = Command::new("perf")
        .args(["stat", "-e", "cpu-clock", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("perf: {e} (apt-get install -y linux-perf)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs a bounded command outside the testbed (perf), remembering its pid for the signal
/// handler.
fn run_bounded(argv: &[&str]) -> std::io::Result<Output> {
    let child = Command::new(argv[0])
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

/// One unmeasured iperf3 run on a shoal path (8 s): `perf record` of this process (which holds
/// the dataplane threads) from 1.5 s to 4.5 s, then `perf stat` of its syscalls for 2 s with
/// the dataplane counters read around it.
fn profile(beds: &mut Beds, p: &PathDef, clk_tck: f64) -> Result<Profile, String> {
    let dir = std::env::temp_dir().join("shoal-overlay-bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let perf_data = dir.join(format!("perf-{}.data", p.kind.key()));
    let stat_file = dir.join(format!("syscalls-{}.csv", p.kind.key()));
    let pid = std::process::id().to_string();
    let dst = p.dst.to_string();
    let threads = beds.threads(p.kind);

    let server = beds
        .testbed(p.kind)
        .spawn(&p.server_ns, &refs(&iperf_server_argv(&dst)))
        .map_err(|e| e.to_string())?;
    let cluster = beds.cluster(p.kind).ok_or("not a shoal path")?;
    let tb = &cluster.testbed;
    let record_argv = [
        "timeout",
        "30",
        "perf",
        "record",
        "-e",
        "cpu-clock",
        "-g",
        "-p",
        &pid,
        "-o",
        perf_data.to_str().ok_or("path")?,
        "--",
        "sleep",
        "3",
    ];
    let syscalls = [
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
    let stat_argv = [
        "timeout",
        "30",
        "perf",
        "stat",
        "-x",
        ",",
        "-o",
        stat_file.to_str().ok_or("path")?,
        "-e",
        &events,
        "-p",
        &pid,
        "--",
        "sleep",
        "2",
    ];

    let result = wait_listening(tb, &p.server_ns, IPERF_PORT).and_then(|()| {
        std::thread::scope(|s| {
            let client = s.spawn(|| {
                let mut argv = iperf_client_argv(&dst, 8);
                // No omitted interval here: the whole run is under load.
                if let Some(i) = argv.iter().position(|a| a == "-O") {
                    argv[i + 1] = "0".into();
                }
                tb.exec(&p.client_ns, &refs(&argv))
            });
            std::thread::sleep(Duration::from_millis(1500));
            let rec = run_bounded(&record_argv).map_err(|e| e.to_string())?;
            if !rec.status.success() {
                return Err(format!(
                    "perf record: {}",
                    String::from_utf8_lossy(&rec.stderr).trim()
                ));
            }
            let samples_line = String::from_utf8_lossy(&rec.stderr)
                .lines()
                .filter(|l| l.contains("samples"))
                .collect::<Vec<_>>()
                .join(" ");
            let s0 = cluster.stats().map_err(|e| e.to_string())?;
            let cpu0 = threads.map(|t| t.and_then(thread_cpu_ticks));
            let t0 = Instant::now();
            let st = run_bounded(&stat_argv).map_err(|e| e.to_string())?;
            let window = t0.elapsed().as_secs_f64();
            let cpu1 = threads.map(|t| t.and_then(thread_cpu_ticks));
            let s1 = cluster.stats().map_err(|e| e.to_string())?;
            let out = client.join().map_err(|_| "iperf3 client thread panicked")?;
            if !st.status.success() {
                return Err(format!(
                    "perf stat: {}",
                    String::from_utf8_lossy(&st.stderr).trim()
                ));
            }
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
            let mut dp_cpu = [f64::NAN; 2];
            for i in 0..2 {
                if let (Some(a), Some(b)) = (cpu0[i], cpu1[i]) {
                    dp_cpu[i] = (b - a) as f64 / clk_tck / window * 100.0;
                }
            }
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
    beds.testbed(p.kind).kill(server);
    let (iperf_gbps, samples_line, segments, io_counts, stat_window_s, dp_cpu) = result?;

    let report = |sort: &str, limit: &str| -> Result<String, String> {
        let out = Command::new("perf")
            .args(["report", "-i"])
            .arg(&perf_data)
            .args([
                "--stdio",
                "--no-children",
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
    };
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains('%'))
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let all = lines(&report("dso,sym", "0")?);
    let top = all.iter().take(15).cloned().collect();
    let threads = lines(&report("comm", "0.5")?);
    let pct = |l: &str| -> f64 {
        l.split('%')
            .next()
            .and_then(|x| x.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let bucket = |pats: &[&str]| -> f64 {
        all.iter()
            .filter(|l| {
                let low = l.to_ascii_lowercase();
                pats.iter().any(|p| low.contains(p))
            })
            .map(|l| pct(l))
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    };
    let buckets = vec![
        (
            "user space ([.])",
            all.iter()
                .filter(|l| l.contains("[.]"))
                .map(|l| pct(l))
                .sum(),
        ),
        (
            "kernel ([k])",
            all.iter()
                .filter(|l| l.contains("[k]"))
                .map(|l| pct(l))
                .sum(),
        ),
        (
            "AEAD (chacha/poly1305)",
            bucket(&["chacha", "poly1305", "aead"]),
        ),
        (
            "copies (memcpy/memmove/copy_*_user/iter copies)",
            bucket(&[
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
        ("checksums (csum*)", bucket(&["csum", "checksum"])),
        (
            "syscall entry/exit",
            bucket(&[
                "entry_syscall",
                "do_syscall_64",
                "syscall_exit",
                "syscall_return",
                "entry_SYSCALL",
            ]),
        ),
    ];

    let children = Command::new("perf")
        .args(["report", "-i"])
        .arg(&perf_data)
        .args([
            "--stdio",
            "--children",
            "-g",
            "none",
            "--sort",
            "sym",
            "--percent-limit",
            "0",
        ])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let inclusive: Vec<(String, f64)> = INCLUSIVE
        .iter()
        .filter_map(|(sym, what)| {
            children.lines().find_map(|l| {
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
        .collect();

    let stat_text = std::fs::read_to_string(&stat_file).unwrap_or_default();
    let syscalls = stat_text
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
        .collect();

    Ok(Profile {
        kind: p.kind,
        iperf_gbps,
        record_cmd: record_argv.join(" "),
        stat_cmd: stat_argv.join(" "),
        perf_data,
        samples_line,
        top,
        threads,
        buckets,
        inclusive,
        syscalls,
        stat_window_s,
        segments,
        io_counts,
        dp_cpu,
    })
}

impl Profile {
    fn markdown(&self) -> String {
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
        s += &self
            .buckets
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}%"))
            .collect::<Vec<_>>()
            .join(", ");
        s += "\n\nInclusive (`perf report --children`) share of samples under: ";
        s += &self
            .inclusive
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}%"))
            .collect::<Vec<_>>()
            .join(", ");
        let all = self
            .syscalls
            .iter()
            .find(|(k, _)| k == "all")
            .map_or(0, |(_, n)| *n);
        s += &format!(
            "\n\nSyscalls of the process in {:.1} s (`{}`), with dataplane CPU n1/n2 = {:.0}/{:.0}% of a core: ",
            self.stat_window_s, self.stat_cmd, self.dp_cpu[0], self.dp_cpu[1]
        );
        s += &self
            .syscalls
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.segments > 0 {
            s += &format!(
                ". Overlay segments over the wire in that window (Σ `encapsulated`, both \
                 directions): {} ({:.0}/s) → **{:.3} syscalls per segment** (both nodes' \
                 syscalls together)",
                self.segments,
                self.segments as f64 / self.stat_window_s,
                all as f64 / self.segments as f64
            );
            for name in [
                "read",
                "write",
                "recvmmsg",
                "sendmmsg",
                "epoll_wait",
                "poll",
            ] {
                if let Some((_, n)) = self.syscalls.iter().find(|(k, _)| k == name)
                    && *n > 0
                {
                    s += &format!(", {name} {:.3}", *n as f64 / self.segments as f64);
                }
            }
            s += ". Shell I/O in the window: ";
            s += &self
                .io_counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
        }
        s += &format!(
            ".\n\n(perf data kept out of the tree: `{}`.)\n",
            self.perf_data.display()
        );
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "path": self.kind.key(),
            "iperf_gbps_under_perf": self.iperf_gbps,
            "record_cmd": self.record_cmd,
            "top_symbols": self.top,
            "threads": self.threads,
            "inclusive_pct": self.inclusive.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "buckets_pct": self.buckets.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "syscalls": self.syscalls.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "stat_window_s": self.stat_window_s,
            "segments": self.segments,
            "shell_io": self.io_counts.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "dataplane_cpu_pct": [self.dp_cpu[0], self.dp_cpu[1]],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Report

struct Report<'a> {
    cfg: &'a Config,
    machine: &'a Machine,
    date: &'a str,
    paths: &'a [PathDef],
    results: &'a BTreeMap<Kind, Vec<RunResult>>,
    counters: &'a BTreeMap<Kind, Vec<Stats>>,
    kernel_drops: &'a BTreeMap<Kind, Vec<KernelCounters>>,
    profiles: &'a [Profile],
    kvx_setup: &'a [String],
    br_nf: &'a str,
    revision: &'a str,
    conditions: &'a [String],
    measured_s: f64,
    total_s: f64,
}

impl Report<'_> {
    fn values(&self, kind: Kind, f: impl Fn(&RunResult) -> f64) -> Vec<f64> {
        self.results
            .get(&kind)
            .map(|v| v.iter().map(f).collect())
            .unwrap_or_default()
    }

    fn med(&self, kind: Kind, f: impl Fn(&RunResult) -> f64) -> f64 {
        median(&self.values(kind, f)).unwrap_or(f64::NAN)
    }

    fn ratio_gbps(&self, kind: Kind) -> f64 {
        self.med(kind, |r| r.gbps) / self.med(Kind::KernelVxlan, |r| r.gbps)
    }

    fn ratio_rtt(&self, kind: Kind) -> f64 {
        self.med(kind, |r| r.rtt_p50) / self.med(Kind::KernelVxlan, |r| r.rtt_p50)
    }

    fn results_table(&self) -> String {
        let mut t = Table::new(&[
            "path",
            "inner MTU",
            "iperf3 1 stream, Gbit/s",
            "× kernel VXLAN",
            "TCP RR p50, µs",
            "p99, µs",
            "p50 × kernel VXLAN",
            "retransmits / run",
            "CPU % client / server (iperf3)",
            "CPU % dataplane n1 / n2",
        ]);
        for p in self.paths {
            let k = p.kind;
            let cpu = |f: fn(&RunResult) -> f64| median(&self.values(k, f)).unwrap_or(f64::NAN);
            t.row(&[
                format!("{} (`{}`)", k.label(), k.key()),
                p.mtu.to_string(),
                format!("**{}**", fmt_summary(&self.values(k, |r| r.gbps), 2)),
                format!("{:.2}", self.ratio_gbps(k)),
                format!("**{}**", fmt_summary(&self.values(k, |r| r.rtt_p50), 1)),
                fmt_summary(&self.values(k, |r| r.rtt_p99), 0),
                format!("{:.2}", self.ratio_rtt(k)),
                fmt_summary(&self.values(k, |r| r.retransmits), 0),
                format!(
                    "{:.0} / {:.0}",
                    cpu(|r| r.cpu_client),
                    cpu(|r| r.cpu_server)
                ),
                if k.is_shoal() {
                    format!("{:.0} / {:.0}", cpu(|r| r.dp_cpu[0]), cpu(|r| r.dp_cpu[1]))
                } else {
                    "–".into()
                },
            ]);
        }
        t.to_markdown()
    }

    fn targets(&self) -> Vec<(String, f64, String, bool)> {
        let plain_t = self.ratio_gbps(Kind::Plain);
        let sealed_t = self.ratio_gbps(Kind::Sealed);
        let plain_r = self.ratio_rtt(Kind::Plain);
        let sealed_r = self.ratio_rtt(Kind::Sealed);
        vec![
            (
                "plain throughput ≥ 0.8× kernel VXLAN".into(),
                plain_t,
                format!("≥ {PLAIN_GBPS_TARGET}"),
                plain_t >= PLAIN_GBPS_TARGET,
            ),
            (
                "sealed throughput ≥ 0.5× kernel VXLAN".into(),
                sealed_t,
                format!("≥ {SEALED_GBPS_TARGET}"),
                sealed_t >= SEALED_GBPS_TARGET,
            ),
            (
                "plain RTT p50 ≤ 1.5× kernel VXLAN".into(),
                plain_r,
                format!("≤ {RTT_TARGET}"),
                plain_r <= RTT_TARGET,
            ),
            (
                "sealed RTT p50 ≤ 1.5× kernel VXLAN".into(),
                sealed_r,
                format!("≤ {RTT_TARGET}"),
                sealed_r <= RTT_TARGET,
            ),
        ]
    }

    fn markdown(&self) -> String {
        let c = self.cfg;
        let mut s = String::new();
        s += "# Overlay data path: shoal vs. kernel VXLAN (`bench/src/bin/overlay.rs`)\n\n";
        s += &format!(
            "Measured {} in one run of `target/release/overlay` ({:.0} s for the measured runs, \
             {:.0} s in all with setup and the profile pass). RUNS={}, IPERF_T={} s, SOCKPERF_T={} s; \
             the paths are interleaved (run 1 of every path, then run 2, ...). Median [min..max] \
             over the runs.\n\n",
            self.date, self.measured_s, self.total_s, c.runs, c.iperf_t, c.sockperf_t
        );
        s += &format!(
            "Machine: nproc {}, kernel {}, CPU {}, {} MiB. Tools: {}; {}; {}.\n\n",
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu,
            self.machine.mem_mib,
            first_line_of(&["iperf3", "--version"]),
            first_line_of(&["sockperf", "--version"]),
            first_line_of(&["perf", "--version"]),
        );
        s += &format!("Code measured: {}.\n\n", self.revision);
        s += &format!(
            "Load from others (the machine is shared; another benchmark or a build running at \
             the same time lowers every figure): {}.\n\n",
            self.conditions.join("; ")
        );
        s += "## Results\n\n";
        s += &self.results_table();
        s += "\nRTT = sockperf TCP ping-pong round trip (`--full-rtt`), 64-byte messages, one \
              outstanding; p99 is the median over runs of each run's p99. CPU % = share of one \
              core (the machine has nproc of them); dataplane CPU is the node's dataplane thread \
              (n1 = client side: TAP read + encapsulate; n2 = server side: decapsulate + TAP \
              write; the ACKs go the other way), from /proc during the iperf3 run.\n\n";

        s += "## Targets (against kernel VXLAN, same run)\n\n";
        let mut t = Table::new(&["target", "measured", "needed", "met?"]);
        for (name, v, need, ok) in self.targets() {
            t.row(&[
                name,
                format!("{v:.2}×"),
                need,
                if ok { "**yes**" } else { "**no**" }.to_string(),
            ]);
        }
        s += &t.to_markdown();
        s += "\n";

        s += "## Per-run values\n\n";
        let mut t = Table::new(&[
            "run",
            "path",
            "Gbit/s",
            "retransmits",
            "CPU % client / server",
            "CPU % dataplane n1 / n2",
            "RTT p50 / p99 / avg, µs",
            "round trips/s",
            "errors",
        ]);
        for run in 0..c.runs {
            for p in self.paths {
                let Some(r) = self.results.get(&p.kind).and_then(|v| v.get(run)) else {
                    continue;
                };
                t.row(&[
                    (run + 1).to_string(),
                    p.kind.key().to_string(),
                    format!("{:.3}", r.gbps),
                    format!("{:.0}", r.retransmits),
                    format!("{:.0} / {:.0}", r.cpu_client, r.cpu_server),
                    if p.kind.is_shoal() {
                        format!("{:.0} / {:.0}", r.dp_cpu[0], r.dp_cpu[1])
                    } else {
                        "–".into()
                    },
                    format!("{:.1} / {:.1} / {:.1}", r.rtt_p50, r.rtt_p99, r.rtt_avg),
                    format!("{:.0}", r.round_trips_per_s),
                    r.errors.join("; "),
                ]);
            }
        }
        s += &t.to_markdown();
        s += "\n";

        s += "## Dataplane counters after the measured runs\n\n";
        s += "From `Cluster::stats()` of each shoal cluster, cumulative since it started (the \
              measured runs plus a few setup pings), before the profile pass. Only non-zero \
              drop reasons are listed.\n\n";
        for (kind, stats) in self.counters {
            s += &format!("**{}** (`{}`)\n\n", kind.label(), kind.key());
            let rows: Vec<Vec<(String, u64)>> = stats.iter().map(stats_rows).collect();
            let mut names: Vec<String> = Vec::new();
            for r in &rows {
                for (k, _) in r {
                    if !names.contains(k) {
                        names.push(k.clone());
                    }
                }
            }
            let mut header = vec!["counter".to_string()];
            header.extend((1..=rows.len()).map(|i| format!("n{i}")));
            let mut t = Table::new(&header);
            for name in &names {
                let mut row = vec![name.clone()];
                for r in &rows {
                    row.push(
                        r.iter()
                            .find(|(k, _)| k == name)
                            .map_or(0, |(_, v)| *v)
                            .to_string(),
                    );
                }
                t.row(&row);
            }
            s += &t.to_markdown();
            s += "\nAround the dataplane (kernel counters, same moment): ";
            if let Some(kd) = self.kernel_drops.get(kind) {
                s += &kd
                    .iter()
                    .map(|(what, vals)| {
                        format!(
                            "{what}: {}",
                            vals.iter()
                                .map(|(k, v)| format!("{k} {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            s += ".\n\n";
        }

        if !self.profiles.is_empty() {
            s += "## Where the dataplane's time goes (profile, not part of the measured runs)\n\n";
            s += "perf has no hardware counters in this VM, so `cpu-clock` sampling. The \
                  process profiled is the benchmark itself, which holds both nodes' dataplane \
                  threads (iperf3 runs in other processes; kernel work done in the dataplane \
                  thread's context, e.g. delivering a frame written to a TAP, is included). \
                  Without a PMU, `cpu-clock` samples cannot land where interrupts are disabled: \
                  that time is charged to where they are enabled again, which is why \
                  `_raw_spin_unlock_irqrestore` (e.g. the wakeup of a reader in \
                  `sock_def_readable`) can rank high.\n\n";
            for prof in self.profiles {
                s += &prof.markdown();
                s += "\n";
            }
        }

        s += "## Topology and commands\n\n";
        s += &format!(
            "Three testbeds (`tests::Testbed`, namespaces `st<pid>_<n>-*`, removed on exit), each \
             with an underlay namespace holding bridge `br0` and two node namespaces whose \
             `eth0` (veth, MTU {DEFAULT_MTU}) plugs into it, underlay {DEFAULT_UNDERLAY}, no \
             default route. In the underlay namespace \
             `net.bridge.bridge-nf-call-iptables` = {} (1: bridged IPv4 frames pass the \
             iptables hooks, br_netfilter; a per-frame cost every path pays, amortised by GSO on \
             the kernel paths):\n\n",
            self.br_nf
        );
        for p in self.paths {
            s += &format!(
                "- `{}`: client in {} → server in {} at {} (inner MTU {}).{}\n",
                p.kind.key(),
                p.client_name,
                p.server_name,
                p.dst,
                p.mtu,
                match p.kind {
                    Kind::Veth =>
                        " Node to node over the underlay: veth → bridge → veth. Note: the anchor \
                         (`shared/anchors/1a_veth.sh`) used one direct veth pair; this path adds \
                         the bridge, like every other path here.",
                    Kind::KernelVxlan =>
                        " `vx0` in nodes k1, k2 (kernel defaults for offloads: TX checksum and \
                         GSO stay on, as in the anchor `1b_vxlan.sh`; the `ethtool -K vx0 tx off` \
                         of `tests/tests/kernel_vxlan.rs` is only needed when a userspace \
                         receiver reads the inner frames).",
                    Kind::Plain =>
                        " `tests::cluster::Cluster`, 2 nodes n1, n2 each with a shoal dataplane \
                         thread (UDP 4789), plain network VNI 4097 10.77.0.0/24, container c1 \
                         on n1, c2 on n2, one TAP `eth0` each.",
                    Kind::Sealed =>
                        " Same as plain, with the network encrypted (ChaCha20-Poly1305, test key \
                         of epoch 1).",
                }
            );
        }
        s += "\nKernel VXLAN setup (in each node namespace):\n\n```\n";
        for l in self.kvx_setup {
            s += l;
            s.push('\n');
        }
        s += "```\n\nPer run and path (client in the client namespace, server spawned through \
              `Testbed::spawn` in the server namespace and killed after the measurement), e.g. \
              for kernel VXLAN:\n\n```\n";
        let dst = KVX_IPS[1];
        s += &format!(
            "server: {}\nclient: {}\nserver: {}\nclient: {}\n",
            iperf_server_argv(dst).join(" "),
            iperf_client_argv(dst, c.iperf_t).join(" "),
            sockperf_server_argv(dst).join(" "),
            sockperf_client_argv(dst, c.sockperf_t).join(" "),
        );
        s += "```\n\nThroughput = `end.sum_received.bits_per_second` of the iperf3 JSON \
              (`-O 1`: the first second is omitted); retransmits = `end.sum_sent.retransmits`; \
              CPU = `end.cpu_utilization_percent.host_total` / `remote_total`. RTT = sockperf's \
              `percentile 50.000` / `99.000` lines.\n\n";
        s += "Reproduce: `cargo build -p bench --release --bin overlay && sudo \
              target/release/overlay` (env `RUNS`, `IPERF_T`, `SOCKPERF_T`, `PROFILE=0` to skip \
              perf).\n\n";
        s += "## Caveats\n\n\
              - 2 shared vCPUs: iperf3 client and server, both dataplane threads and the kernel's \
              softirq work share them, so a path's figure is a joint limit of everything on it, \
              not of the dataplane alone.\n\
              - Noisy VM: run-to-run spread of 5–30% is normal here (see \
              `shared/anchors/RESULTS.md`); compare paths within this run, not with figures from \
              other sittings. With RUNS=3 the median is the middle run.\n\
              - The anchor figures in `shared/anchors/RESULTS.md` §1 used 10 s runs, 5 \
              repetitions, and a direct veth pair; the kernel VXLAN path here is otherwise the \
              same (VNI 4097, UDP 4789, static FDB and neighbours, MTU 1450).\n";
        s
    }

    fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("date".into(), json!(self.date));
        m.insert("machine".into(), self.machine.to_json());
        m.insert(
            "config".into(),
            json!({
                "runs": self.cfg.runs,
                "iperf_t_s": self.cfg.iperf_t,
                "sockperf_t_s": self.cfg.sockperf_t,
                "veth_path": "underlay (veth+bridge) between two testbed nodes",
            }),
        );
        m.insert("measured_s".into(), json!(self.measured_s));
        m.insert("conditions".into(), json!(self.conditions));
        m.insert("revision".into(), json!(self.revision));
        m.insert("total_s".into(), json!(self.total_s));
        for k in Kind::ALL {
            m.insert(format!("{}_gbps", k.key()), json!(self.med(k, |r| r.gbps)));
            m.insert(
                format!("{}_rtt_us", k.key()),
                json!(self.med(k, |r| r.rtt_p50)),
            );
            m.insert(
                format!("{}_rtt_p99_us", k.key()),
                json!(self.med(k, |r| r.rtt_p99)),
            );
        }
        for k in [Kind::Veth, Kind::Plain, Kind::Sealed] {
            m.insert(
                format!("{}_gbps_ratio_to_kernel_vxlan", k.key()),
                json!(self.ratio_gbps(k)),
            );
            m.insert(
                format!("{}_rtt_ratio_to_kernel_vxlan", k.key()),
                json!(self.ratio_rtt(k)),
            );
        }
        m.insert(
            "targets".into(),
            Value::Array(
                self.targets()
                    .into_iter()
                    .map(|(name, v, need, ok)| {
                        json!({"target": name, "ratio": v, "needed": need, "met": ok})
                    })
                    .collect(),
            ),
        );
        let mut paths = serde_json::Map::new();
        for p in self.paths {
            let k = p.kind;
            let sum = |f: fn(&RunResult) -> f64| {
                Summary::of(&self.values(k, f)).map_or(Value::Null, |s| s.to_json())
            };
            paths.insert(
                k.key().into(),
                json!({
                    "label": k.label(),
                    "client": p.client_name,
                    "server": p.server_name,
                    "dst": p.dst.to_string(),
                    "inner_mtu": p.mtu,
                    "gbps": sum(|r| r.gbps),
                    "retransmits": sum(|r| r.retransmits),
                    "rtt_p50_us": sum(|r| r.rtt_p50),
                    "rtt_p99_us": sum(|r| r.rtt_p99),
                    "runs": self.results.get(&k).map(|v| v.iter().enumerate().map(|(i, r)| r.to_json(i + 1)).collect::<Vec<_>>()).unwrap_or_default(),
                }),
            );
        }
        m.insert("paths".into(), Value::Object(paths));
        let mut counters = serde_json::Map::new();
        for (k, stats) in self.counters {
            let nodes: Vec<Value> = stats
                .iter()
                .map(|st| {
                    Value::Object(
                        stats_rows(st)
                            .into_iter()
                            .map(|(n, v)| (n, json!(v)))
                            .collect(),
                    )
                })
                .collect();
            let around: serde_json::Map<String, Value> = self
                .kernel_drops
                .get(k)
                .map(|kd| {
                    kd.iter()
                        .map(|(what, vals)| {
                            (
                                what.clone(),
                                Value::Object(
                                    vals.iter().map(|(n, v)| (n.clone(), json!(v))).collect(),
                                ),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            counters.insert(
                k.key().into(),
                json!({"nodes": nodes, "kernel": Value::Object(around)}),
            );
        }
        m.insert("dataplane_counters".into(), Value::Object(counters));
        m.insert(
            "profiles".into(),
            Value::Array(self.profiles.iter().map(Profile::to_json).collect()),
        );
        Value::Object(m)
    }
}

// ---------------------------------------------------------------------------------------------
// Signals

/// SIGINT/SIGTERM/SIGHUP: remove this process's testbed namespaces (killing what runs in
/// them, i.e. every server and client) and any running perf, then exit. Panics already clean
/// up through the testbeds' Drop. Call first in `main`, before any thread exists, so that
/// every thread inherits the blocked mask (children get a clean mask from `Command`).
fn install_signal_cleanup() {
    use nix::sys::signal::{SigSet, Signal, kill};
    use nix::unistd::Pid;
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        eprintln!("overlay: {sig:?}: removing this run's namespaces and exiting");
        let perf = PERF_PID.load(Ordering::SeqCst);
        if perf != 0 {
            let _ = kill(Pid::from_raw(perf as i32), Signal::SIGKILL);
        }
        let me = std::process::id();
        for name in list_netns()
            .into_iter()
            .filter(|n| owner_pid(n) == Some(me))
        {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
        std::process::exit(130);
    });
}
