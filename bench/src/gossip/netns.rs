//! The run's network namespace: `bgos-<pid>-<k>`, one per scenario run, with only loopback
//! (up), so every agent's traffic stays on 127.0.0.0/8 inside it. Removed (with whatever
//! still runs in it) when the guard drops, by [`remove_mine`] on SIGINT/SIGTERM/SIGHUP, and by
//! [`sweep`] when the process that made it is gone.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use tests::testbed::{list_netns, remove_netns};

const PREFIX: &str = "bgos";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace of ours; deleted on drop.
#[derive(Debug)]
pub(super) struct Netns {
    pub(super) name: String,
}

/// The prefix of this process's namespaces: `bgos-<pid>-`.
fn mine() -> String {
    format!("{PREFIX}-{}-", std::process::id())
}

/// The pid in a `bgos-<pid>-<k>` name.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let (pid, k) = rest.split_once('-')?;
    k.parse::<u32>().ok()?;
    pid.parse().ok()
}

impl Netns {
    /// Creates a new namespace with `lo` up.
    pub(super) fn create() -> Result<Netns, String> {
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let ns = Netns {
            name: format!("{}{k}", mine()),
        };
        ip(&["netns", "add", &ns.name])?;
        // From here on, `ns` drops (and deletes the namespace) on error too.
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes every namespace of this process (the signal handler's extra step).
pub(super) fn remove_mine() {
    let mine = mine();
    for name in list_netns().into_iter().filter(|n| n.starts_with(&mine)) {
        remove_netns(&name);
    }
}

/// Removes `bgos-*` namespaces whose process is gone (a run that was SIGKILLed).
pub(super) fn sweep() {
    for name in list_netns() {
        if let Some(pid) = owner(&name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("gossip: removing leftover namespace {name}");
            remove_netns(&name);
        }
    }
}

/// This process's namespaces still present (should be none after the runs).
pub(super) fn leftovers() -> Vec<String> {
    let mine = mine();
    list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn names_say_their_owner() {
        assert_eq!(owner("bgos-1234-0"), Some(1234));
        assert_eq!(owner("bgos-1234-x"), None);
        assert_eq!(owner("bgos1234-0"), None);
        assert_eq!(owner("st1a_2-node1"), None);
    }
}
