//! The lab's hands on the host: namespaces, the underlay bridge and its links (through
//! iproute2's `ip`, as an operator would type them), processes started inside namespaces,
//! and their removal. Every function here either does its one thing or says what failed and
//! how to look.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::plan::Names;
use dataplane::shell::netns::NETNS_RUN_DIR;

/// The underlay bridge inside the underlay namespace.
const BRIDGE: &str = "br0";
/// A node's underlay interface, inside its namespace.
pub const NODE_IF: &str = "eth0";

/// Runs `ip ARGS`; the error carries the command and what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_RUN_DIR).join(name).exists()
}

/// The namespaces whose names start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A new namespace with `lo` up and IPv6 off (no router solicitations on the underlay).
pub fn add_netns(name: &str) -> Result<(), String> {
    if !netns_exists(name) {
        ip(&["netns", "add", name])?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    // A kernel without IPv6 has nothing to turn off: the error is of no consequence.
    let _ =
        dataplane::shell::netns::in_netns(&dataplane::shell::netns::NetnsRef::named(name), || {
            for conf in ["all", "default"] {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), b"1")?;
            }
            Ok(())
        });
    Ok(())
}

/// The underlay: a namespace with a bridge, and the host's link into it at `host/24`.
pub fn add_underlay(names: &Names, subnet: Ipv4Net, host: Ipv4Addr) -> Result<(), String> {
    let ns = names.underlay_netns();
    add_netns(&ns)?;
    if ip(&["-n", &ns, "link", "show", BRIDGE]).is_err() {
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
    }
    ip(&["-n", &ns, "link", "set", BRIDGE, "up"])?;
    let link = names.host_link();
    if ip(&["link", "show", &link]).is_err() {
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "host", "netns", &ns,
        ])?;
        ip(&["-n", &ns, "link", "set", "host", "master", BRIDGE, "up"])?;
        let cidr = format!("{host}/{}", subnet.prefix_len());
        ip(&["addr", "add", &cidr, "dev", &link])?;
    }
    ip(&["link", "set", &link, "up"])
}

/// Node `i`'s namespace plugged into the underlay bridge, at `addr`.
pub fn add_node(
    names: &Names,
    i: usize,
    node: &str,
    addr: Ipv4Addr,
    subnet: Ipv4Net,
) -> Result<(), String> {
    let ns = names.node_netns(node);
    add_netns(&ns)?;
    let underlay = names.underlay_netns();
    let port = Names::bridge_port(i);
    if ip(&["-n", &ns, "link", "show", NODE_IF]).is_err() {
        ip(&[
            "-n", &underlay, "link", "add", &port, "type", "veth", "peer", "name", NODE_IF,
            "netns", &ns,
        ])?;
        let cidr = format!("{addr}/{}", subnet.prefix_len());
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", NODE_IF])?;
    }
    ip(&[
        "-n", &underlay, "link", "set", &port, "master", BRIDGE, "up",
    ])?;
    ip(&["-n", &ns, "link", "set", NODE_IF, "up"])
}

/// `lab cut` / `lab heal`: node `i`'s bridge port down or up (the node loses or regains every
/// peer, the host included; its processes go on).
pub fn set_cut(names: &Names, i: usize, cut: bool) -> Result<(), String> {
    let state = if cut { "down" } else { "up" };
    ip(&[
        "-n",
        &names.underlay_netns(),
        "link",
        "set",
        &Names::bridge_port(i),
        state,
    ])
}

/// The routes of the host's namespace (to keep a lab's subnet off them).
pub fn host_routes() -> Vec<Ipv4Net> {
    let Ok(out) = Command::new("ip").args(["-4", "route", "show"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|dst| {
            dst.parse::<Ipv4Net>()
                .ok()
                .or_else(|| dst.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
        })
        .collect()
}

/// Starts `program args` inside namespace `netns` (network only: the host's files stay in
/// view), detached from this terminal, output appended to `log`. Its pid.
pub fn spawn_in(netns: &str, program: &Path, args: &[&str], log: &Path) -> Result<u32, String> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let netns_path = Path::new(NETNS_RUN_DIR).join(netns);
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns_path.display()))
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // Its own process group: a Ctrl-C at `lab up` does not take the cluster down with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .spawn()
        .map_err(|e| format!("nsenter (util-linux) for {}: {e}", program.display()))?;
    // nsenter execs the program: the child's pid is the daemon's. Nobody waits for it; once
    // this command exits, init reaps it.
    Ok(child.id())
}

/// Whether `pid` runs and is a shoal process (a pid in a record may have been reused).
pub fn is_shoal(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            // A zombie has an empty command line: not running.
            !c.is_empty() && String::from_utf8_lossy(&c).contains("shoal")
        })
        .unwrap_or(false)
}

pub fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// SIGKILLs `pid` and waits (up to 5 s) until it is gone or a zombie without threads: its
/// ports are free for a successor when this returns.
pub fn kill_and_wait(pid: u32) {
    kill(pid);
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command's closing parenthesis.
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        // A dead leader is a zombie while its other threads still exit, and the process's
        // sockets close with the last of them.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        if state.is_none() || (matches!(state, Some(Some('Z' | 'X'))) && threads <= 1) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The processes inside namespace `name` (what `ip netns pids` prints).
pub fn pids_in(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills everything inside namespace `name`.
pub fn kill_all_in(name: &str) {
    for pid in pids_in(name) {
        kill_and_wait(pid);
    }
}

/// Kills what runs inside, then removes the namespace and its `/etc/netns` folder. Never
/// fails: what is gone is gone.
pub fn remove_netns(name: &str) {
    kill_all_in(name);
    // A process being killed may still hold it for a moment; the bind mount goes anyway.
    let _ = ip(&["netns", "del", name]);
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
}

/// Mount points whose path mentions `needle` (a lab's leftovers, for `lab down`'s check).
pub fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|m| m.contains(needle))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `/etc/netns/<netns>/resolv.conf` so that `ip netns exec` shows the container the
/// agent's resolver (as Docker writes a container's resolv.conf).
pub fn write_resolv_conf(netns: &str) -> Result<(), String> {
    let dir = Path::new("/etc/netns").join(netns);
    std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::write(
                dir.join("resolv.conf"),
                "nameserver 127.0.0.11\noptions ndots:0\n",
            )
        })
        .map_err(|e| format!("{}: {e}", dir.display()))
}
