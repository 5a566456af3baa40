//! `lab ls` and `lab down`: the labs this host has, and their removal — every namespace,
//! process, link and file, also after a crash left the record half written.

use super::host;
use super::plan::{self, Dir, Names, Record};
use crate::cli::render::table;

/// Every lab with a readable record.
pub fn records() -> Vec<Record> {
    let Ok(dir) = std::fs::read_dir(plan::labs_root()) else {
        return Vec::new();
    };
    let mut all: Vec<Record> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| Dir::of(&name).load().ok())
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// How many of a lab's daemons run, of how many.
pub fn daemons(record: &Record) -> (usize, usize) {
    let pids = record
        .nodes
        .iter()
        .map(|n| n.agent_pid)
        .chain([record.manager_pid]);
    let (mut up, mut all) = (0, 0);
    for pid in pids {
        all += 1;
        up += usize::from(pid.is_some_and(host::is_shoal));
    }
    (up, all)
}

pub fn ls(json: bool) -> Result<(), String> {
    let all = records();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| {
            let (up, of) = daemons(r);
            vec![
                r.name.clone(),
                r.nodes.len().to_string(),
                r.subnet.to_string(),
                r.stack.clone().unwrap_or_else(|| "-".into()),
                format!("{up}/{of} running"),
            ]
        })
        .collect();
    crate::cli::Out::new(json).print(&all, || {
        table(&["LAB", "NODES", "UNDERLAY", "STACK", "DAEMONS"], &rows)
    });
    Ok(())
}

/// What `down` found left behind after removing everything (empty: clean).
#[derive(Debug, Default)]
pub struct Leftovers {
    pub namespaces: Vec<String>,
    pub mounts: Vec<String>,
    pub host_link: bool,
    pub folder: bool,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.mounts.is_empty() && !self.host_link && !self.folder
    }
}

/// Removes lab `name` whole. Idempotent: a lab that is not there is removed already.
pub fn down(name: &str) -> Result<Leftovers, String> {
    plan::check_name(name)?;
    let names = Names::new(name);
    let dir = Dir::of(name);
    if let Ok(record) = dir.load() {
        // The daemons first, so that no agent re-creates a sandbox while they go.
        for pid in record
            .nodes
            .iter()
            .filter_map(|n| n.agent_pid)
            .chain(record.manager_pid)
        {
            if host::is_shoal(pid) {
                host::kill(pid);
            }
        }
    }
    let prefix = names.netns_prefix();
    // Node namespaces hold the agents: kill in them before removing their tasks' namespaces.
    for ns in host::netns_with_prefix(&prefix) {
        host::kill_all_in(&ns);
    }
    for ns in host::netns_with_prefix(&prefix) {
        host::remove_netns(&ns);
    }
    let link = names.host_link();
    if host::ip(&["link", "show", &link]).is_ok() {
        let _ = host::ip(&["link", "del", &link]);
    }
    let _ = std::fs::remove_dir_all(&dir.0);
    let mut mounts = host::mounts_with(&format!("/netns/{prefix}"));
    mounts.extend(host::mounts_with(&dir.0.display().to_string()));
    Ok(Leftovers {
        namespaces: host::netns_with_prefix(&prefix),
        mounts,
        host_link: host::ip(&["link", "show", &link]).is_ok(),
        folder: dir.0.exists(),
    })
}

pub fn down_cmd(name: &str) -> Result<(), String> {
    let left = down(name)?;
    if left.is_empty() {
        println!("lab {name} removed: no namespace, process, link, mount or file of it is left");
        Ok(())
    } else {
        Err(format!("lab {name}: some of it is still there: {left:?}"))
    }
}
