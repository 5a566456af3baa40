//! `lab matrix`, decided without touching the host: which sources (every running task, every
//! attached container, the host) try which destinations (every service by name, by VIP, every
//! task address, every published port on every node), how the answers are shown, and how they
//! differ from an expected matrix.
//!
//! A cell is `ok` (resolved if a name, and a TCP connection opened), `resolves` (the name
//! resolves, nothing accepts), `no`, or `-` (not tried: the host is on no overlay and has no
//! resolver at 127.0.0.11, and overlay addresses are not routed from it, so only published
//! ports are tried from the host). Tasks reach node addresses through their node's egress
//! bridge (the agent's docker_gwbridge); standalone containers have none yet.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use super::plan::{Names, Record};
use super::summary::{hostnames, short_name};
use crate::cli::render::table;
use crate::manager::State;
use crate::manager::model::{Protocol, TaskState};

/// The port whoami listens on when a service publishes nothing (its default).
pub const WHOAMI_PORT: u16 = 80;

/// Where connections come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    /// The namespace to probe from; `None`: the host itself.
    pub netns: Option<String>,
}

/// What is tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Resolve at 127.0.0.11, then connect to the first address at `port` (if known).
    Name {
        name: String,
        port: Option<u16>,
    },
    Connect(SocketAddrV4),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// A network's short name, or `published`.
    pub group: String,
    pub label: String,
    pub check: Check,
    /// Only tried from inside the cluster (an overlay name or address).
    pub overlay: bool,
}

impl Destination {
    /// The key of its column: `group/label`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.label)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    Ok,
    Resolves,
    No,
    #[serde(rename = "-")]
    Skipped,
}

impl Cell {
    pub fn text(self) -> &'static str {
        match self {
            Cell::Ok => "ok",
            Cell::Resolves => "resolves",
            Cell::No => "no",
            Cell::Skipped => "-",
        }
    }
}

/// The answers: `cells[source][group/label]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    pub cells: BTreeMap<String, BTreeMap<String, Cell>>,
}

/// A task's name in the matrix: `api.1`, or `agent.n2` for a global service's.
pub fn task_label(record: &Record, state: &State, task: &crate::manager::model::Task) -> String {
    let service = state
        .services
        .get(&task.service)
        .map(|s| short_name(record, &s.spec.name))
        .unwrap_or("?");
    let hosts = hostnames(state);
    match (task.slot, task.node.as_deref()) {
        (Some(slot), _) => format!("{service}.{slot}"),
        (None, Some(node)) => format!("{service}.{}", hosts.get(node).copied().unwrap_or(node)),
        (None, None) => format!("{service}.{}", task.id),
    }
}

fn running(state: &State) -> impl Iterator<Item = &crate::manager::model::Task> {
    state
        .tasks
        .values()
        .filter(|t| t.desired == TaskState::Running && t.observed == TaskState::Running)
}

pub fn sources(record: &Record, state: &State) -> Vec<Source> {
    let names = Names::new(&record.name);
    let hosts = hostnames(state);
    let mut out: Vec<Source> = running(state)
        .filter_map(|t| {
            let node = hosts.get(t.node.as_deref()?)?;
            Some(Source {
                name: task_label(record, state, t),
                netns: Some(crate::agent::node::sandbox_name(
                    &names.node_netns(node),
                    &t.id,
                )),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(record.containers.iter().map(|c| Source {
        name: c.name.clone(),
        netns: Some(names.container_netns(&c.name)),
    }));
    out.push(Source {
        name: "host".into(),
        netns: None,
    });
    out
}

pub fn destinations(record: &Record, state: &State) -> Vec<Destination> {
    let mut out = Vec::new();
    for network in state.networks.values().filter(|n| !n.ingress) {
        let group = short_name(record, &network.spec.name).to_owned();
        for service in state.services.values().filter(|s| {
            // A spec names its networks by name or by id.
            s.spec
                .networks
                .iter()
                .any(|a| a.network == network.id || a.network == network.spec.name)
        }) {
            let short = short_name(record, &service.spec.name).to_owned();
            let port = service
                .ports
                .iter()
                .find(|p| p.protocol == Protocol::Tcp)
                .map(|p| p.target)
                .or(service.spec.expose.first().copied())
                .or(service.spec.command.is_empty().then_some(WHOAMI_PORT));
            out.push(Destination {
                group: group.clone(),
                label: short.clone(),
                check: Check::Name {
                    name: short.clone(),
                    port,
                },
                overlay: true,
            });
            let Some(port) = port else { continue };
            if let Some(vip) = service.vips.get(&network.id) {
                out.push(Destination {
                    group: group.clone(),
                    label: format!("{short} vip"),
                    check: Check::Connect(SocketAddrV4::new(*vip, port)),
                    overlay: true,
                });
            }
            let mut tasks: Vec<(String, Ipv4Addr)> = running(state)
                .filter(|t| t.service == service.id)
                .filter_map(|t| {
                    Some((task_label(record, state, t), *t.addresses.get(&network.id)?))
                })
                .collect();
            tasks.sort();
            out.extend(tasks.into_iter().map(|(label, ip)| Destination {
                group: group.clone(),
                label,
                check: Check::Connect(SocketAddrV4::new(ip, port)),
                overlay: true,
            }));
        }
    }
    for service in state.services.values() {
        for port in service.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
            let Some(published) = port.published else {
                continue;
            };
            out.extend(record.nodes.iter().map(|n| Destination {
                group: "published".into(),
                label: format!("{published}@{}", n.name),
                check: Check::Connect(SocketAddrV4::new(n.addr, published)),
                overlay: false,
            }));
        }
    }
    out
}

/// One line per cell that differs: `source -> group/label: expected X, got Y`.
pub fn differences(expected: &Matrix, got: &Matrix) -> Vec<String> {
    let mut out = Vec::new();
    let empty = BTreeMap::new();
    let sources: std::collections::BTreeSet<&String> =
        expected.cells.keys().chain(got.cells.keys()).collect();
    for source in sources {
        let e = expected.cells.get(source).unwrap_or(&empty);
        let g = got.cells.get(source).unwrap_or(&empty);
        let keys: std::collections::BTreeSet<&String> = e.keys().chain(g.keys()).collect();
        for key in keys {
            match (e.get(key), g.get(key)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => out.push(format!(
                    "{source} -> {key}: expected {}, got {}",
                    a.map_or("(absent)", |c| c.text()),
                    b.map_or("(absent)", |c| c.text())
                )),
            }
        }
    }
    out
}

/// One table per group of destinations, a row per source.
pub fn render(sources: &[Source], destinations: &[Destination], m: &Matrix) -> String {
    let mut groups: Vec<&str> = Vec::new();
    for d in destinations {
        if !groups.contains(&d.group.as_str()) {
            groups.push(&d.group);
        }
    }
    let mut out = String::new();
    for group in groups {
        let columns: Vec<&Destination> = destinations.iter().filter(|d| d.group == group).collect();
        let mut header = vec!["FROM"];
        header.extend(columns.iter().map(|d| d.label.as_str()));
        let rows: Vec<Vec<String>> = sources
            .iter()
            .map(|s| {
                let mut row = vec![s.name.clone()];
                row.extend(columns.iter().map(|d| {
                    m.cells
                        .get(&s.name)
                        .and_then(|r| r.get(&d.key()))
                        .map_or("?", |c| c.text())
                        .to_owned()
                }));
                row
            })
            .collect();
        let title = if group == "published" {
            "published ports (PORT@NODE)".to_owned()
        } else {
            format!("network {group} (name, VIP, each task)")
        };
        let _ = writeln!(out, "{title}:\n{}\n", table(&header, &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn m(cells: &[(&str, &str, Cell)]) -> Matrix {
        let mut out = Matrix::default();
        for (s, k, c) in cells {
            out.cells
                .entry(s.to_string())
                .or_default()
                .insert(k.to_string(), *c);
        }
        out
    }

    #[test]
    fn differences_name_the_cell_and_both_answers() {
        let expected = m(&[
            ("api.1", "public/echo", Cell::No),
            ("client", "private/api", Cell::Ok),
        ]);
        let got = m(&[
            ("api.1", "public/echo", Cell::Ok),
            ("client", "private/api", Cell::Ok),
            ("host", "published/8080@n1", Cell::Ok),
        ]);
        assert_eq!(
            differences(&expected, &got),
            vec![
                "api.1 -> public/echo: expected no, got ok",
                "host -> published/8080@n1: expected (absent), got ok",
            ]
        );
        assert!(differences(&got, &got).is_empty());
    }

    #[test]
    fn the_expected_file_is_the_json_of_a_matrix() {
        let text = r#"{"cells": {"host": {"published/8080@n1": "ok", "public/api": "-"}}}"#;
        let parsed: Matrix = serde_json::from_str(text).unwrap();
        assert_eq!(
            parsed,
            m(&[
                ("host", "published/8080@n1", Cell::Ok),
                ("host", "public/api", Cell::Skipped)
            ])
        );
    }
}
