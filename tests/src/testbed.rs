//! The netns testbed: an underlay (a namespace with a bridge), nodes (namespaces with a veth
//! into that bridge) and containers (empty namespaces), all on one host, all removed on drop.
//!
//! Names: every namespace of a testbed is `<prefix>-<name>`, where the prefix is
//! `st<pid base36>_<counter base36>` — unique per process and per testbed, and it says which
//! process owns it, so [`sweep_leftovers`] can remove what a killed test run left behind.
//! Interface names are per namespace, so they never collide between testbeds: every node has
//! `eth0` on the underlay, plugged into `br0` in the underlay namespace through `u<n>`.
//!
//! Traffic stays inside these namespaces: the underlay subnet (192.168.77.0/24 by default)
//! exists only there. Configuration uses iproute2 (`ip`), independent of the code under test.
//!
//! Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dataplane::shell::netns::{NetnsRef, in_netns};
use ipnet::Ipv4Net;

/// The underlay subnet when the test does not pick one.
pub const DEFAULT_UNDERLAY: &str = "192.168.77.0/24";
/// The underlay MTU when the test does not pick one.
pub const DEFAULT_MTU: u32 = 1500;
/// The node's interface on the underlay.
pub const UNDERLAY_IF: &str = "eth0";
/// The bridge in the underlay namespace.
pub const UNDERLAY_BRIDGE: &str = "br0";

const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// `ip netns add` sets up /run/netns on first use; do not race it with ourselves.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A node: a namespace with `lo` up and `eth0` on the underlay bridge.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub ns: NetnsRef,
    pub netns_name: String,
    pub underlay_ip: Ipv4Addr,
    /// Prefix length of the underlay subnet.
    pub underlay_prefix_len: u8,
    /// The interface holding `underlay_ip` ([`UNDERLAY_IF`]).
    pub underlay_if: String,
    pub mtu: u32,
}

/// A container: an empty namespace with `lo` up; the dataplane adds its TAPs.
#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    pub ns: NetnsRef,
    pub netns_name: String,
}

#[derive(Debug)]
struct Underlay {
    netns_name: String,
    subnet: Ipv4Net,
    next_host: usize,
    next_port: u32,
}

#[derive(Debug)]
struct Spawned {
    child: Child,
    log: PathBuf,
}

/// Namespaces and processes of one test; Drop kills and deletes all of them.
#[derive(Debug)]
pub struct Testbed {
    test_name: String,
    prefix: String,
    namespaces: Vec<String>,
    names: BTreeMap<String, String>,
    underlay: Option<Underlay>,
    spawned: BTreeMap<u32, Spawned>,
    log_dir: PathBuf,
}

impl Testbed {
    /// A new, empty testbed with a unique prefix. Removes leftovers of dead test processes
    /// first ([`sweep_leftovers`]). Panics when not root.
    pub fn new(test_name: &str) -> Testbed {
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the netns testbed needs root"
        );
        sweep_leftovers();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("st{}_{}", base36(std::process::id()), base36(n));
        let log_dir = std::env::temp_dir().join("shoal-testbed").join(&prefix);
        tracing::info!(test = test_name, prefix, "testbed");
        Testbed {
            test_name: test_name.to_string(),
            prefix,
            namespaces: Vec::new(),
            names: BTreeMap::new(),
            underlay: None,
            spawned: BTreeMap::new(),
            log_dir,
        }
    }

    /// The prefix of every namespace name of this testbed (`st…_…`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn test_name(&self) -> &str {
        &self.test_name
    }

    /// The namespaces created so far, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Creates the underlay: a namespace `<prefix>-underlay` with bridge `br0` (no STP, no
    /// IPv6). Nodes get consecutive host addresses of `subnet`. Panics if there already is one.
    pub fn add_underlay(&mut self, subnet: Ipv4Net) {
        assert!(
            self.underlay.is_none(),
            "the testbed already has an underlay"
        );
        let netns_name = self.create_netns("underlay");
        let ns = NetnsRef::named(&netns_name);
        disable_ipv6(&ns);
        self.ip(&[
            "-n",
            &netns_name,
            "link",
            "add",
            UNDERLAY_BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
        ]);
        self.ip(&["-n", &netns_name, "link", "set", UNDERLAY_BRIDGE, "up"]);
        self.underlay = Some(Underlay {
            netns_name,
            subnet,
            next_host: 0,
            next_port: 0,
        });
    }

    /// The underlay namespace's name, if there is an underlay.
    pub fn underlay_netns(&self) -> Option<&str> {
        self.underlay.as_ref().map(|u| u.netns_name.as_str())
    }

    /// A node with an underlay MTU of 1500 (creates the default underlay if there is none).
    pub fn add_node(&mut self, name: &str) -> Node {
        self.add_node_with_mtu(name, DEFAULT_MTU)
    }

    /// A node whose underlay link (both veth ends) has MTU `mtu`.
    pub fn add_node_with_mtu(&mut self, name: &str, mtu: u32) -> Node {
        if self.underlay.is_none() {
            self.add_underlay(DEFAULT_UNDERLAY.parse().expect("valid default subnet"));
        }
        let netns_name = self.create_netns(name);
        let (underlay_ns, subnet, host, port) = {
            let u = self.underlay.as_mut().expect("underlay exists");
            let host = u.next_host;
            let port = u.next_port;
            u.next_host += 1;
            u.next_port += 1;
            (u.netns_name.clone(), u.subnet, host, port)
        };
        let ip = subnet
            .hosts()
            .nth(host)
            .unwrap_or_else(|| panic!("underlay subnet {subnet} has no address left"));
        let port_if = format!("u{port}");
        let mtu_s = mtu.to_string();
        self.ip(&[
            "-n",
            &underlay_ns,
            "link",
            "add",
            &port_if,
            "mtu",
            &mtu_s,
            "type",
            "veth",
            "peer",
            "name",
            UNDERLAY_IF,
            "mtu",
            &mtu_s,
            "netns",
            &netns_name,
        ]);
        self.ip(&[
            "-n",
            &underlay_ns,
            "link",
            "set",
            &port_if,
            "master",
            UNDERLAY_BRIDGE,
            "up",
        ]);
        let cidr = format!("{ip}/{}", subnet.prefix_len());
        self.ip(&["-n", &netns_name, "addr", "add", &cidr, "dev", UNDERLAY_IF]);
        self.ip(&["-n", &netns_name, "link", "set", UNDERLAY_IF, "up"]);
        Node {
            name: name.to_string(),
            ns: NetnsRef::named(&netns_name),
            netns_name,
            underlay_ip: ip,
            underlay_prefix_len: subnet.prefix_len(),
            underlay_if: UNDERLAY_IF.to_string(),
            mtu,
        }
    }

    /// A container: an empty namespace with `lo` up.
    pub fn add_container(&mut self, name: &str) -> Container {
        let netns_name = self.create_netns(name);
        Container {
            name: name.to_string(),
            ns: NetnsRef::named(&netns_name),
            netns_name,
        }
    }

    /// Runs `argv` inside namespace `netns_name` (`ip netns exec`) and waits for it. Panics if
    /// it cannot be started; check `status` yourself.
    pub fn exec(&self, netns_name: &str, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns_name])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {netns_name} {argv:?}: {e}"))
    }

    /// [`exec`](Self::exec) that panics unless it succeeds; returns stdout.
    pub fn exec_ok(&self, netns_name: &str, argv: &[&str]) -> String {
        let out = self.exec(netns_name, argv);
        assert!(
            out.status.success(),
            "in {netns_name}: {argv:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `argv` in the background inside `netns_name`; stdout and stderr go to a log file
    /// ([`log_of`](Self::log_of)). Killed (SIGKILL) when the testbed drops. Returns its pid.
    pub fn spawn(&mut self, netns_name: &str, argv: &[&str]) -> io::Result<u32> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns_name]);
        self.spawn_logged(command, argv)
    }

    /// [`spawn`](Self::spawn) entering only the network namespace (`nsenter --net`): the
    /// process shares the host's mount namespace, so the namespaces it creates under
    /// /run/netns (a shoal agent's task sandboxes) are seen by the test and outlive it.
    pub fn spawn_net(&mut self, netns_name: &str, argv: &[&str]) -> io::Result<u32> {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={NETNS_DIR}/{netns_name}"))
            .arg("--");
        self.spawn_logged(command, argv)
    }

    /// Starts `entry argv` with its output in a log file; `entry` execs argv in place (the
    /// pid is argv's own).
    fn spawn_logged(&mut self, mut entry: Command, argv: &[&str]) -> io::Result<u32> {
        std::fs::create_dir_all(&self.log_dir)?;
        let stem: String = argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("empty")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let log = self
            .log_dir
            .join(format!("{}-{stem}.log", self.spawned.len()));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = entry
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let pid = child.id();
        self.spawned.insert(pid, Spawned { child, log });
        Ok(pid)
    }

    /// What a spawned process wrote so far (stdout and stderr interleaved).
    pub fn log_of(&self, pid: u32) -> Option<String> {
        let s = self.spawned.get(&pid)?;
        std::fs::read(&s.log)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Kills (SIGKILL) and reaps a process started with [`spawn`](Self::spawn); `false` if the
    /// pid is not ours.
    pub fn kill(&mut self, pid: u32) -> bool {
        match self.spawned.get_mut(&pid) {
            Some(s) => {
                let _ = s.child.kill();
                let _ = s.child.wait();
                true
            }
            None => false,
        }
    }

    /// Whether a process started with [`spawn`](Self::spawn) is still running.
    pub fn is_running(&mut self, pid: u32) -> bool {
        self.spawned
            .get_mut(&pid)
            .is_some_and(|s| matches!(s.child.try_wait(), Ok(None)))
    }

    /// Gives processes started in `netns_name` by [`exec`](Self::exec) or
    /// [`spawn`](Self::spawn) their own /etc/resolv.conf (`ip netns exec` mounts
    /// `/etc/netns/<name>/resolv.conf` over it); removed with the namespace.
    pub fn set_resolv_conf(&self, netns_name: &str, text: &str) {
        assert!(
            self.namespaces.iter().any(|n| n == netns_name),
            "{netns_name} is not a namespace of testbed {}",
            self.prefix
        );
        let dir = etc_netns_dir(netns_name);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("resolv.conf"), text))
            .unwrap_or_else(|e| panic!("write {}/resolv.conf: {e}", dir.display()));
    }

    /// Runs `f` on a thread inside `ns` ([`in_netns`]).
    pub fn run_in<T, F>(&self, ns: &NetnsRef, f: F) -> io::Result<T>
    where
        F: FnOnce() -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        in_netns(ns, f)
    }

    /// Creates `<prefix>-<name>` with `lo` up and records it for deletion.
    fn create_netns(&mut self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "bad testbed name {name:?}: use [A-Za-z0-9_-]{{1,32}}"
        );
        assert!(
            !self.names.contains_key(name),
            "testbed name {name:?} used twice"
        );
        let netns_name = format!("{}-{name}", self.prefix);
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            run_ip(&["netns", "add", &netns_name]).unwrap_or_else(|e| panic!("{e}"));
        }
        self.namespaces.push(netns_name.clone());
        self.names.insert(name.to_string(), netns_name.clone());
        self.ip(&["-n", &netns_name, "link", "set", "lo", "up"]);
        netns_name
    }

    fn ip(&self, args: &[&str]) {
        run_ip(args).unwrap_or_else(|e| panic!("testbed {}: {e}", self.prefix));
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for s in self.spawned.values_mut() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        for netns_name in self.namespaces.iter().rev() {
            remove_netns(netns_name);
        }
        // Namespaces its processes made under its prefix (an agent's task sandboxes).
        let made = format!("{}-", self.prefix);
        for netns_name in list_netns().iter().filter(|n| n.starts_with(&made)) {
            remove_netns(netns_name);
        }
        // Keep the logs of a failed test when they say something.
        let said_something = self
            .spawned
            .values()
            .any(|s| std::fs::metadata(&s.log).is_ok_and(|m| m.len() > 0));
        if std::thread::panicking() && said_something {
            eprintln!(
                "testbed {}: logs kept in {}",
                self.prefix,
                self.log_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// Runs `ip <args>`; the error carries the command and its stderr.
fn run_ip(args: &[&str]) -> Result<(), String> {
    match Command::new("ip").args(args).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("ip {}: {e}", args.join(" "))),
    }
}

/// Turns IPv6 off in a namespace (all and default), so no RS/MLD/DAD noise.
fn disable_ipv6(ns: &NetnsRef) {
    let _ = in_netns(ns, || {
        for conf in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), b"1");
        }
        Ok(())
    });
}

/// Kills whatever still runs inside `netns_name`, then deletes it. Never panics.
pub fn remove_netns(netns_name: &str) {
    if let Ok(out) = Command::new("ip")
        .args(["netns", "pids", netns_name])
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", netns_name])
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(etc_netns_dir(netns_name));
}

/// `ip netns exec <name>` bind-mounts the files of `/etc/netns/<name>/` over `/etc/`.
fn etc_netns_dir(netns_name: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns_name)
}

/// The namespaces in `/run/netns` (what `ip netns list` shows).
pub fn list_netns() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The pid that owns a testbed namespace name (`st<pid36>_<n36>-<name>`), if it is one.
pub fn owner_pid(netns_name: &str) -> Option<u32> {
    let rest = netns_name.strip_prefix("st")?;
    let (pid, rest) = rest.split_once('_')?;
    let (counter, name) = rest.split_once('-')?;
    let is_b36 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    if !is_b36(pid) || !is_b36(counter) || name.is_empty() {
        return None;
    }
    u32::from_str_radix(pid, 36).ok()
}

/// Removes testbed namespaces whose owning process is gone (a test run that was killed), and
/// kills what still runs in them. Namespaces of live processes are left alone.
pub fn sweep_leftovers() {
    for name in list_netns() {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(netns = name, pid, "removing leftover testbed namespace");
            remove_netns(&name);
        }
    }
}

/// Polls `cond` every 10 ms until it holds (`true`) or `timeout` passes (`false`).
#[allow(clippy::disallowed_methods)] // tests may read the clock
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` in base 36 (short, lower-case: fits namespace and link names).
pub fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn base36_and_owner_pid_roundtrip() {
        for pid in [0u32, 1, 35, 36, 4_194_304, u32::MAX] {
            let name = format!("st{}_{}-node1", base36(pid), base36(7));
            assert_eq!(owner_pid(&name), Some(pid), "{name}");
        }
        assert_eq!(owner_pid("st12_0-"), None);
        assert_eq!(owner_pid("st12-0-x"), None);
        assert_eq!(owner_pid("stA_0-x"), None);
        assert_eq!(owner_pid("other"), None);
        assert_eq!(owner_pid("st_0-x"), None);
    }
}
