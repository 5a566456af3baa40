//! HAProxy, the anchor: the configuration of `shared/anchors/2_l4lb_haproxy.sh` (`mode tcp`,
//! `balance roundrobin`, `maxconn 8000`, default threading, no health checks), checked with
//! `haproxy -c` and started in a namespace of the testbed (killed when the testbed drops).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::Testbed;

/// The anchor's configuration, bound on `listen`, in front of `servers` (name, address).
pub(super) fn config(listen: SocketAddr, servers: &[(String, SocketAddr)]) -> String {
    let mut cfg = String::from(
        "global\n    maxconn 8000\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\nfrontend fe\n",
    );
    cfg += &format!("    bind {listen}\n    default_backend be\nbackend be\n");
    cfg += "    balance roundrobin\n";
    for (name, addr) in servers {
        cfg += &format!("    server {name} {addr}\n");
    }
    cfg
}

/// Writes `cfg` to `dir/haproxy.cfg`, checks it and starts `haproxy -db` inside `netns_name`;
/// returns its pid once it listens (a connection to `listen` from the same namespace is
/// accepted), at most 5 s later.
pub(super) fn start(
    testbed: &mut Testbed,
    netns_name: &str,
    cfg: &str,
    dir: &Path,
    listen: SocketAddr,
) -> Result<u32, String> {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).map_err(|e| format!("write {}: {e}", path.display()))?;
    let path_s = path.to_string_lossy().into_owned();
    let check = Command::new("haproxy")
        .args(["-c", "-f", &path_s])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("haproxy -c: {e}"))?;
    if !check.status.success() {
        return Err(format!(
            "haproxy -c -f {path_s}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ));
    }
    let pid = testbed
        .spawn(netns_name, &["haproxy", "-db", "-f", &path_s])
        .map_err(|e| format!("start haproxy: {e}"))?;
    let listening = tests::wait_until(Duration::from_secs(5), || {
        let out = testbed.exec(
            netns_name,
            &["ss", "-Htln", &format!("sport = :{}", listen.port())],
        );
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    });
    if !listening || !testbed.is_running(pid) {
        return Err(format!(
            "haproxy does not listen on {listen}: {}",
            testbed.log_of(pid).unwrap_or_default()
        ));
    }
    Ok(pid)
}

/// `HAProxy version 2.6.12-...`.
pub(super) fn version() -> String {
    crate::first_line_of(&["haproxy", "-v"])
}

/// HAProxy's resident memory (KiB) and thread count, from `/proc`.
pub(super) fn rss_and_threads(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("Threads:")?))
}
