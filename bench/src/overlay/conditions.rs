//! The conditions of a run, for the report: which code was measured and what else loaded the
//! machine.

use crate::first_line_of;
use std::process::Command;
use tests::testbed::{list_netns, owner_pid};

/// Which code was measured: the commit, files of the tree that differ from it (outside
/// bench/), and when this binary was built.
pub(crate) fn revision() -> String {
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
pub(crate) fn load() -> String {
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
