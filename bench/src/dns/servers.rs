//! The two servers, side by side in one testbed namespace (loopback only): unbound on
//! 127.0.0.53:53 with the anchor's configuration (`shared/anchors/3_dns.sh`), and shoal's
//! [`DnsServer`] in this process on 127.0.0.11:53. Also the records both hold, the query file
//! both get, the check that both answer every name with its address, and the servers' CPU time.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ::dns::shell::{ListenSockets, RESOLVER_ADDR};
use ::dns::{
    DnsConfig, DnsServer, DnsStats, EndpointMode, Scope, ServiceRecord, TaskRecord, Update,
};
use tests::Testbed;
use tests::testbed::wait_until;

use crate::first_line_of;

/// How many names each server holds: `svc-0000.anc.test` .. `svc-0999.anc.test`.
pub(super) const RECORDS: usize = 1000;
/// The zone of the anchor, which is the name of shoal's network here: the query
/// `svc-0000.anc.test` is service `svc-0000` on network `anc.test` for a client on that network.
pub(super) const NETWORK: &str = "anc.test";
/// Where unbound listens (the anchor's address).
pub(super) const UNBOUND_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);

/// The server a figure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Server {
    Unbound,
    Shoal,
}

impl Server {
    /// In the order every run measures them.
    pub(super) const ALL: [Server; 2] = [Server::Unbound, Server::Shoal];

    pub(super) fn key(self) -> &'static str {
        match self {
            Server::Unbound => "unbound",
            Server::Shoal => "shoal",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Server::Unbound => "unbound, `num-threads: 1`",
            Server::Shoal => "shoal `DnsServer` (in-process, 1 tokio thread)",
        }
    }

    pub(super) fn addr(self) -> Ipv4Addr {
        match self {
            Server::Unbound => UNBOUND_ADDR,
            Server::Shoal => match RESOLVER_ADDR.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => Ipv4Addr::new(127, 0, 0, 11),
            },
        }
    }
}

/// The i-th service's name (`svc-0042`).
pub(super) fn service(i: usize) -> String {
    format!("svc-{i:04}")
}

/// The i-th name as queried (`svc-0042.anc.test`).
pub(super) fn fqdn(i: usize) -> String {
    format!("{}.{NETWORK}", service(i))
}

/// The i-th service's VIP, as the anchor's records: 10.200.(i / 250).(i % 250 + 1).
pub(super) fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// The address of the i-th service's one task (shoal only: a VIP without an enabled task does
/// not resolve). Never asked for.
fn task_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Where this process keeps its files: `$TMPDIR/shoal-dns-bench/<pid>`.
pub(super) fn work_dir() -> PathBuf {
    std::env::temp_dir()
        .join("shoal-dns-bench")
        .join(std::process::id().to_string())
}

/// The benchmark's files (query file, unbound's configuration); removed on drop.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Both servers running in one namespace. Fields drop in order: shoal's server first (its
/// thread stops, its sockets close), then the testbed (kills unbound and whatever else runs in
/// the namespace, deletes it), then the files.
#[derive(Debug)]
pub(super) struct Bed {
    shoal: DnsServer,
    /// shoal's serving thread (`shoal-dns`) in this process, for its CPU time.
    shoal_tid: Option<u32>,
    unbound_pid: u32,
    tb: Testbed,
    dir: WorkDir,
    pub(super) ns: String,
    /// The query file: the 1000 names, shuffled, one `<name> A` a line.
    pub(super) queries: PathBuf,
    pub(super) unbound_conf: String,
    clk_tck: f64,
}

impl Bed {
    /// Creates the namespace, writes the files, starts both servers and checks that each
    /// answers every one of the 1000 names with its VIP.
    pub(super) fn build() -> Result<Bed, String> {
        let mut tb = Testbed::new("dns-bench");
        let container = tb.add_container("dns");
        let ns = container.netns_name.clone();

        let dir = WorkDir(work_dir());
        std::fs::create_dir_all(&dir.0)
            .map_err(|e| format!("cannot create {}: {e}", dir.0.display()))?;
        let queries = dir.0.join("queries.txt");
        write(&queries, &query_file())?;
        let records = dir.0.join("unbound-records.conf");
        write(&records, &unbound_records())?;
        let unbound_conf = unbound_conf(&dir.0, &records);
        let conf = dir.0.join("unbound.conf");
        write(&conf, &unbound_conf)?;
        let check = Command::new("unbound-checkconf")
            .arg(&conf)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("unbound-checkconf: {e} (apt-get install -y unbound)"))?;
        if !check.status.success() {
            return Err(format!(
                "unbound-checkconf rejects {}: {}",
                conf.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            ));
        }
        let conf_s = conf.to_string_lossy().into_owned();
        let unbound_pid = tb
            .spawn(&ns, &["unbound", "-d", "-c", &conf_s])
            .map_err(|e| format!("cannot start unbound: {e}"))?;

        let shoal = tb
            .run_in(&container.ns, start_shoal)
            .map_err(|e| format!("cannot start shoal's DnsServer: {e}"))?;
        let shoal_tid = thread_named("shoal-dns");

        let bed = Bed {
            shoal,
            shoal_tid,
            unbound_pid,
            tb,
            dir,
            ns,
            queries,
            unbound_conf,
            clk_tck: first_line_of(&["getconf", "CLK_TCK"])
                .parse()
                .unwrap_or(100.0),
        };
        for s in Server::ALL {
            bed.wait_answering(s)?;
            bed.check_all_names(s)?;
        }
        Ok(bed)
    }

    /// Runs `argv` inside the namespace and waits for it.
    pub(super) fn exec(&self, argv: &[&str]) -> Output {
        self.tb.exec(&self.ns, argv)
    }

    /// The CPU time (user + system, seconds) a server used so far: unbound's whole process,
    /// shoal's serving thread.
    pub(super) fn cpu_s(&self, s: Server) -> Option<f64> {
        let path = match s {
            Server::Unbound => format!("/proc/{}/stat", self.unbound_pid),
            Server::Shoal => format!("/proc/self/task/{}/stat", self.shoal_tid?),
        };
        let stat = std::fs::read_to_string(path).ok()?;
        let rest = &stat[stat.rfind(") ")? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / self.clk_tck)
    }

    /// unbound's resident memory, KiB (VmRSS).
    pub(super) fn unbound_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.unbound_pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Whether unbound still runs (it could have died during a run).
    pub(super) fn unbound_running(&mut self) -> bool {
        self.tb.is_running(self.unbound_pid)
    }

    pub(super) fn shoal_stats(&self) -> DnsStats {
        self.shoal.stats()
    }

    /// Waits (10 s at most) until `s` answers the first name with its VIP.
    fn wait_answering(&self, s: Server) -> Result<(), String> {
        let want = vip(0).to_string();
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(10), || {
            last = self.dig(s, &[&fqdn(0), "A"]);
            last.trim() == want
        });
        if ok {
            return Ok(());
        }
        let log = match s {
            Server::Unbound => self.tb.log_of(self.unbound_pid).unwrap_or_default(),
            Server::Shoal => String::new(),
        };
        Err(format!(
            "{} at {} does not answer {} A with {want} after 10 s (dig said {:?}){}",
            s.key(),
            s.addr(),
            fqdn(0),
            last.trim(),
            if log.trim().is_empty() {
                String::new()
            } else {
                format!("; its log: {}", log.trim())
            }
        ))
    }

    /// Asks `s` for all 1000 names (one `dig -f` batch) and compares every answer with its VIP.
    fn check_all_names(&self, s: Server) -> Result<(), String> {
        let batch = self.dir.0.join("dig-batch.txt");
        let text: String = (0..RECORDS).map(|i| format!("{} A\n", fqdn(i))).collect();
        write(&batch, &text)?;
        let batch_s = batch.to_string_lossy().into_owned();
        let out = self.dig(s, &["-f", &batch_s]);
        let got: Vec<&str> = out.lines().map(str::trim).collect();
        let wrong: Vec<String> = (0..RECORDS)
            .filter(|&i| got.get(i).copied() != Some(vip(i).to_string().as_str()))
            .take(3)
            .map(|i| format!("{} -> {:?} (want {})", fqdn(i), got.get(i), vip(i)))
            .collect();
        if got.len() != RECORDS || !wrong.is_empty() {
            return Err(format!(
                "{} at {} does not answer the 1000 names with their VIPs: {} answers, e.g. {}",
                s.key(),
                s.addr(),
                got.len(),
                wrong.join(", ")
            ));
        }
        Ok(())
    }

    /// `dig +short` against `s` inside the namespace, bounded; stdout.
    fn dig(&self, s: Server, args: &[&str]) -> String {
        let server = format!("@{}", s.addr());
        let mut argv = vec![
            "timeout", "-k", "2", "60", "dig", &server, "+short", "+time=1", "+tries=2",
        ];
        argv.extend_from_slice(args);
        String::from_utf8_lossy(&self.exec(&argv).stdout).into_owned()
    }
}

/// shoal's server with network `anc.test` holding the 1000 services (VIP mode, one enabled
/// task each), serving one endpoint on 127.0.0.11:53 whose scope is that network. Run on a
/// thread inside the namespace: the sockets and the serving thread (spawned from here) live
/// there. No upstreams: nothing can be forwarded anywhere (every name asked is local anyway).
fn start_shoal() -> io::Result<DnsServer> {
    let server = DnsServer::start(DnsConfig {
        upstreams: Some(Vec::new()),
        ..DnsConfig::default()
    })?;
    server
        .apply(Update::SetNetwork {
            network: NETWORK.into(),
            internal: false,
            ingress: false,
        })
        .map_err(io::Error::other)?;
    for i in 0..RECORDS {
        let name = service(i);
        let task = TaskRecord {
            name: format!("{name}.1.task{i:04}"),
            ip: task_ip(i),
            enabled: true,
        };
        let update = Update::SetService {
            network: NETWORK.into(),
            service: ServiceRecord {
                name,
                mode: EndpointMode::Vip,
                vip: Some(vip(i)),
                aliases: Vec::new(),
                tasks: vec![task],
                ports: Vec::new(),
            },
        };
        server.apply(update).map_err(io::Error::other)?;
    }
    let sockets = ListenSockets::bind(RESOLVER_ADDR)?;
    let scope = Scope {
        networks: vec![NETWORK.into()],
        user_ndots: false,
    };
    server
        .add_endpoint("bench", sockets, scope)
        .map_err(io::Error::other)?;
    Ok(server)
}

/// The tid of this process's thread called `comm`, if there is exactly one.
fn thread_named(comm: &str) -> Option<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm) {
            found.push(tid);
        }
    }
    match found.as_slice() {
        [tid] => Some(*tid),
        _ => None,
    }
}

/// The query file: every name once, in a fixed shuffled order (Fisher–Yates with splitmix64
/// seeded 42), so consecutive queries do not walk the table in order. dnsperf loops over it.
pub(super) fn query_file() -> String {
    let mut order: Vec<usize> = (0..RECORDS).collect();
    let mut state: u64 = 42;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..order.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
        .into_iter()
        .map(|i| format!("{} A\n", fqdn(i)))
        .collect()
}

/// unbound's records, as the anchor's: `local-data: "<name>. 60 IN A <vip>"`.
fn unbound_records() -> String {
    (0..RECORDS)
        .map(|i| format!("    local-data: \"{}. 60 IN A {}\"\n", fqdn(i), vip(i)))
        .collect()
}

/// The anchor's unbound configuration (`3_dns.sh`, `num-threads: 1`).
fn unbound_conf(dir: &Path, records: &Path) -> String {
    format!(
        "server:
    interface: {UNBOUND_ADDR}
    port: 53
    do-ip6: no
    do-daemonize: no
    username: \"\"
    chroot: \"\"
    directory: \"{}\"
    pidfile: \"\"
    use-syslog: no
    logfile: \"\"
    verbosity: 0
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: \"iterator\"
    local-zone: \"{NETWORK}.\" static
include: \"{}\"
remote-control:
    control-enable: no
",
        dir.display(),
        records.display()
    )
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn records_match_the_anchor() {
        assert_eq!(fqdn(0), "svc-0000.anc.test");
        assert_eq!(vip(0), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(vip(249), Ipv4Addr::new(10, 200, 0, 250));
        assert_eq!(vip(250), Ipv4Addr::new(10, 200, 1, 1));
        assert_eq!(vip(999), Ipv4Addr::new(10, 200, 3, 250));
    }

    #[test]
    fn query_file_holds_every_name_once() {
        let q = query_file();
        let mut lines: Vec<&str> = q.lines().collect();
        assert_eq!(lines.len(), RECORDS);
        assert_ne!(lines[0], "svc-0000.anc.test A", "shuffled");
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), RECORDS);
        assert_eq!(q, query_file(), "the same order every run");
    }
}
