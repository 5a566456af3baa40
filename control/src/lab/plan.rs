//! What a lab is made of, decided without touching the host: its name rules, the names of
//! its namespaces and links, its addresses, and the record kept in its folder
//! (`lab.json`) that every later `shoal lab` command reads.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The manager's API port inside the lab.
pub const MANAGER_PORT: u16 = 2377;

/// Labs' underlays are /24s of this range, the first free one unless `--subnet` says.
pub const UNDERLAY_RANGE: &str = "172.29.0.0/16";

/// The host's address on a lab's underlay (the last host of the /24).
pub const HOST_OCTET: u8 = 254;

/// The longest lab name: the host's link is `<name>-h` and Linux allows 15 characters.
pub const MAX_NAME: usize = 12;

/// Checks a lab name: 1–12 of `a-z 0-9 _`, starting with a letter (it becomes namespace,
/// link and folder names).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "lab name {name:?}: use 1 to {MAX_NAME} of a-z, 0-9 and _, starting with a letter \
             (it names the lab's namespaces and its host link)"
        ))
    }
}

/// The names a lab's parts get on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub lab: String,
}

impl Names {
    pub fn new(lab: &str) -> Names {
        Names {
            lab: lab.to_owned(),
        }
    }

    /// Every namespace of the lab starts with this (nodes, tasks, containers, the underlay).
    pub fn netns_prefix(&self) -> String {
        format!("{}-", self.lab)
    }

    pub fn underlay_netns(&self) -> String {
        format!("{}-underlay", self.lab)
    }

    /// A node's namespace, also the prefix of its agent's task sandboxes.
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}-{node}", self.lab)
    }

    /// A standalone container's namespace (`lab attach`).
    pub fn container_netns(&self, container: &str) -> String {
        format!("{}-c-{container}", self.lab)
    }

    /// The host end of the host's link into the underlay.
    pub fn host_link(&self) -> String {
        format!("{}-h", self.lab)
    }

    /// Node `i`'s (0-based) name: `n1`, `n2`, ...
    pub fn node_name(i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// The underlay bridge's port of node `i`, in the underlay namespace.
    pub fn bridge_port(i: usize) -> String {
        format!("u{}", i + 1)
    }
}

/// Node `i`'s (0-based) underlay address: `.1`, `.2`, ... of the /24.
pub fn node_addr(subnet: Ipv4Net, i: usize) -> Option<Ipv4Addr> {
    let host = u8::try_from(i + 1).ok().filter(|h| *h < HOST_OCTET)?;
    let [a, b, c, _] = subnet.network().octets();
    Some(Ipv4Addr::new(a, b, c, host))
}

pub fn host_addr(subnet: Ipv4Net) -> Ipv4Addr {
    let [a, b, c, _] = subnet.network().octets();
    Ipv4Addr::new(a, b, c, HOST_OCTET)
}

/// The first /24 of [`UNDERLAY_RANGE`] that no other lab uses and no route of the host
/// overlaps (`taken`: both).
pub fn pick_subnet(taken: &[Ipv4Net]) -> Result<Ipv4Net, String> {
    let range: Ipv4Net = UNDERLAY_RANGE.parse().map_err(|_| "bad range".to_owned())?;
    range
        .subnets(24)
        .map_err(|e| e.to_string())?
        .find(|s| !taken.iter().any(|t| t.contains(s) || s.contains(t)))
        .ok_or_else(|| {
            format!(
                "every /24 of {UNDERLAY_RANGE} is taken by a lab or a route: remove a lab \
                 (`shoal lab down NAME`) or give --subnet"
            )
        })
}

/// The stack's name for a compose file: its stem, or its folder's name when the stem says
/// nothing (`stack.yml`, `docker-compose.yml`, `compose.yaml`).
pub fn stack_name(file: &Path) -> String {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("stack");
    let generic = ["stack", "docker-compose", "compose"].contains(&stem);
    let name = if generic {
        file.parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
            .unwrap_or(stem)
    } else {
        stem
    };
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "stack".into()
    } else {
        clean
    }
}

/// What `lab.json` holds: enough for every later command, and for `lab down` after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub subnet: Ipv4Net,
    pub nodes: Vec<NodeRecord>,
    /// The node the manager runs on (its first).
    pub manager_node: String,
    pub manager_pid: Option<u32>,
    /// The worker join token.
    pub token: String,
    /// The manager join token: the manager's node joins as a manager, as in Docker.
    #[serde(default)]
    pub manager_token: String,
    /// The agents' `--algorithm`, when not the default (round robin).
    #[serde(default)]
    pub algorithm: Option<String>,
    /// The stack deployed at `up`, if any.
    pub stack: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub addr: Ipv4Addr,
    pub agent_pid: Option<u32>,
    /// `lab cut`: its underlay link is down.
    #[serde(default)]
    pub cut: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub node: String,
    pub network: String,
}

impl Record {
    pub fn node(&self, name: &str) -> Result<&NodeRecord, String> {
        let i = self.node_index(name)?;
        Ok(&self.nodes[i])
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut NodeRecord, String> {
        let i = self.node_index(name)?;
        Ok(&mut self.nodes[i])
    }

    /// Where node `name` is in [`nodes`](Self::nodes) (also its bridge port's number).
    pub fn node_index(&self, name: &str) -> Result<usize, String> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                format!(
                    "lab {} has no node {name:?} (its nodes: {})",
                    self.name,
                    names.join(", ")
                )
            })
    }

    pub fn manager_addr(&self) -> Result<std::net::SocketAddr, String> {
        Ok((self.node(&self.manager_node)?.addr, MANAGER_PORT).into())
    }
}

/// Where labs keep their folders: `SHOAL_LAB_DIR`, or `/var/lib/shoal/labs`.
pub fn labs_root() -> PathBuf {
    std::env::var_os("SHOAL_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/shoal/labs"))
}

/// A lab's folder layout.
#[derive(Clone, Debug)]
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn of(lab: &str) -> Dir {
        Dir(labs_root().join(lab))
    }
    pub fn record(&self) -> PathBuf {
        self.0.join("lab.json")
    }
    pub fn certs(&self) -> PathBuf {
        self.0.join("cli")
    }
    pub fn manager_state(&self) -> PathBuf {
        self.0.join("manager.redb")
    }
    pub fn log(&self, what: &str) -> PathBuf {
        self.0.join(format!("{what}.log"))
    }
    pub fn node_state(&self, node: &str) -> PathBuf {
        self.0.join(node)
    }
    pub fn socket(&self, node: &str) -> PathBuf {
        self.0.join(node).join("agent.sock")
    }

    pub fn load(&self) -> Result<Record, String> {
        let text = std::fs::read_to_string(self.record()).map_err(|e| {
            format!(
                "{}: {e} (is there such a lab? `shoal lab ls` lists them)",
                self.record().display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", self.record().display()))
    }

    pub fn save(&self, record: &Record) -> Result<(), String> {
        let text = serde_json::to_string_pretty(record).map_err(|e| e.to_string())?;
        let tmp = self.0.join("lab.json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, self.record()))
            .map_err(|e| format!("{}: {e}", self.record().display()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lab_names_fit_interface_names_and_stay_simple() {
        for good in ["lab", "shoal", "st1x_2", "a23456789012"] {
            assert!(check_name(good).is_ok(), "{good}");
            assert!(Names::new(good).host_link().len() <= 15);
        }
        for bad in ["", "Lab", "1lab", "a234567890123", "la b", "lab-1", "lab/x"] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains("a-z"), "{e}");
        }
    }

    #[test]
    fn every_namespace_carries_the_lab_prefix() {
        let n = Names::new("shoal");
        let prefix = n.netns_prefix();
        for ns in [
            n.underlay_netns(),
            n.node_netns("n1"),
            n.container_netns("client"),
        ] {
            assert!(ns.starts_with(&prefix), "{ns}");
        }
        // The agent's sandboxes are named from the node's namespace.
        let sandbox = crate::agent::node::sandbox_name(&n.node_netns("n2"), "abcdef0123456789");
        assert_eq!(sandbox, "shoal-n2-abcdef012345");
    }

    #[test]
    fn addresses_are_one_per_node_and_the_host_last() {
        let subnet: Ipv4Net = "172.29.3.0/24".parse().unwrap();
        assert_eq!(node_addr(subnet, 0), Some(Ipv4Addr::new(172, 29, 3, 1)));
        assert_eq!(node_addr(subnet, 252), Some(Ipv4Addr::new(172, 29, 3, 253)));
        assert_eq!(node_addr(subnet, 253), None);
        assert_eq!(host_addr(subnet), Ipv4Addr::new(172, 29, 3, 254));
    }

    #[test]
    fn the_subnet_is_the_first_free_one() {
        assert_eq!(pick_subnet(&[]).unwrap().to_string(), "172.29.0.0/24");
        let taken: Vec<Ipv4Net> = vec!["172.29.0.0/24".parse().unwrap()];
        assert_eq!(pick_subnet(&taken).unwrap().to_string(), "172.29.1.0/24");
        // A host route over the whole range leaves nothing.
        let all: Vec<Ipv4Net> = vec!["172.16.0.0/12".parse().unwrap()];
        assert!(pick_subnet(&all).unwrap_err().contains("--subnet"));
    }

    #[test]
    fn stack_names_come_from_the_file() {
        assert_eq!(stack_name(Path::new("examples/seed/stack.yml")), "seed");
        assert_eq!(stack_name(Path::new("/x/gallery.yaml")), "gallery");
        assert_eq!(
            stack_name(Path::new("docker-compose.yml")),
            "docker-compose"
        );
        assert_eq!(stack_name(Path::new("a/My App/compose.yml")), "my_app");
    }
}
