//! What the agent holds, for `shoal agent status` (JSON on the local API, a text for people)
//! and for the Prometheus endpoint: both are built from one [`Status`], so they agree.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::Agent;
use super::plan::Phase;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: NodeStatus,
    pub members: Vec<MemberStatus>,
    pub networks: Vec<NetworkStatus>,
    pub tasks: Vec<TaskStatus>,
    pub containers: Vec<ContainerStatus>,
    pub vips: Vec<VipStatus>,
    /// Dataplane drops by reason (non-zero only).
    pub drops: BTreeMap<String, u64>,
    pub conntrack_entries: usize,
    /// Resolver counters by name.
    pub dns: BTreeMap<String, u64>,
    /// Gossip input refused, by reason.
    pub gossip_refused: BTreeMap<String, u64>,
    pub published: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub hostname: String,
    pub overlay: Option<SocketAddr>,
    pub manager_connected: bool,
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub addr: SocketAddr,
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub id: String,
    pub name: String,
    pub vni: u32,
    pub encrypted: bool,
    pub key_epochs: Vec<u32>,
    /// Overlay frames and bytes to and from other nodes.
    #[serde(default)]
    pub frames_out: u64,
    #[serde(default)]
    pub bytes_out: u64,
    #[serde(default)]
    pub frames_in: u64,
    #[serde(default)]
    pub bytes_in: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub id: String,
    pub name: String,
    pub phase: String,
    /// Takes new connections (running and healthy).
    pub enabled: bool,
    pub addresses: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub container: String,
    pub network: String,
    pub ip: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub vni: u32,
    pub vip: Ipv4Addr,
    pub algorithm: String,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub ip: Ipv4Addr,
    /// active (takes new flows) or draining (unhealthy, stopping).
    pub state: String,
    pub open_flows: u32,
    pub total_flows: u64,
}

fn phase_name(phase: Phase) -> String {
    match phase {
        Phase::Starting => "starting".into(),
        Phase::Running => "running".into(),
        Phase::Stopping => "stopping".into(),
        Phase::Ended(state) => format!("{state:?}").to_lowercase(),
    }
}

impl Agent {
    /// A snapshot of everything the node holds.
    pub fn status(&self) -> Status {
        let shared = &self.shared;
        let mut status = Status::default();
        {
            let local = shared.local();
            status.node = NodeStatus {
                id: shared.config.identity.id.clone(),
                hostname: shared.config.identity.hostname.clone(),
                overlay: Some(shared.overlay),
                manager_connected: local.manager_connected,
                revision: local.revision,
            };
            status.networks = local
                .networks
                .values()
                .map(|n| NetworkStatus {
                    id: n.view.id.clone(),
                    name: n.view.name.clone(),
                    vni: n.view.vni,
                    encrypted: n.view.keys.is_some(),
                    key_epochs: n.installed.iter().copied().collect(),
                    frames_out: 0,
                    bytes_out: 0,
                    frames_in: 0,
                    bytes_in: 0,
                })
                .collect();
            status.tasks = local
                .tasks
                .iter()
                .map(|(id, t)| TaskStatus {
                    id: id.clone(),
                    name: t.view.name.clone(),
                    phase: phase_name(t.phase),
                    enabled: t.enabled,
                    addresses: t
                        .sandbox
                        .iter()
                        .flat_map(|s| s.interfaces.iter().map(|i| i.ip))
                        .collect(),
                })
                .collect();
        }
        status.containers = self
            .attachments()
            .into_iter()
            .map(|a| ContainerStatus {
                container: a.container,
                network: a.network,
                ip: a.ip,
            })
            .collect();
        status.members = shared
            .gossip
            .members()
            .into_iter()
            .map(|m| MemberStatus {
                name: m.name,
                addr: m.addr,
                state: format!("{:?}", m.state).to_lowercase(),
            })
            .collect();
        if let Ok(stats) = shared.dataplane.stats() {
            status.drops = stats
                .core
                .drop_counts()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect();
            status.conntrack_entries = stats.conntrack_entries;
            for n in &mut status.networks {
                let traffic = dataplane::types::Vni::new(n.vni)
                    .and_then(|vni| stats.core.networks.get(&vni).copied())
                    .unwrap_or_default();
                n.frames_out = traffic.frames_out;
                n.bytes_out = traffic.bytes_out;
                n.frames_in = traffic.frames_in;
                n.bytes_in = traffic.bytes_in;
            }
            status.vips = stats
                .vips
                .iter()
                .map(|v| VipStatus {
                    vni: v.vni.get(),
                    vip: v.vip,
                    algorithm: format!("{:?}", v.algorithm).to_lowercase(),
                    backends: v
                        .backends
                        .iter()
                        .map(|b| BackendStatus {
                            ip: b.ip,
                            state: format!("{:?}", b.state).to_lowercase(),
                            open_flows: b.active,
                            total_flows: b.total,
                        })
                        .collect(),
                })
                .collect();
        }
        let dns = shared.dns.stats();
        status.dns = dns::shell::Counter::ALL
            .iter()
            .map(|c| (c.name().to_owned(), dns.get(*c)))
            .collect();
        status.gossip_refused = shared
            .gossip
            .rejected()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        status.published = super::mesh::published(shared);
        status
    }
}

/// The status for people.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "NODE {} ({}), overlay {}, manager {} (revision {})",
        s.node.hostname,
        s.node.id,
        s.node.overlay.map(|a| a.to_string()).unwrap_or_default(),
        if s.node.manager_connected {
            "connected"
        } else {
            "unreachable"
        },
        s.node.revision
    );
    let _ = writeln!(out, "\nMEMBERS");
    for m in &s.members {
        let _ = writeln!(out, "  {:<16} {:<22} {}", m.name, m.addr, m.state);
    }
    let _ = writeln!(out, "\nNETWORKS");
    for n in &s.networks {
        let sealed = if n.encrypted {
            format!("encrypted, key epochs {:?}", n.key_epochs)
        } else {
            "plain".into()
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<12} vni {:<8} {sealed}; out {} frames / {} B, in {} frames / {} B",
            n.name, n.id, n.vni, n.frames_out, n.bytes_out, n.frames_in, n.bytes_in
        );
    }
    let _ = writeln!(out, "\nTASKS");
    for t in &s.tasks {
        let addrs: Vec<String> = t.addresses.iter().map(Ipv4Addr::to_string).collect();
        let serving = if t.enabled {
            "in balancer"
        } else {
            "out of balancer"
        };
        let _ = writeln!(
            out,
            "  {:<28} {:<9} {:<16} {}",
            t.name,
            t.phase,
            serving,
            addrs.join(" ")
        );
    }
    if !s.containers.is_empty() {
        let _ = writeln!(out, "\nCONTAINERS");
        for c in &s.containers {
            let _ = writeln!(out, "  {:<28} {:<16} {}", c.container, c.network, c.ip);
        }
    }
    let _ = writeln!(out, "\nVIPS (conntrack entries: {})", s.conntrack_entries);
    for v in &s.vips {
        let _ = writeln!(out, "  {} vni {} ({})", v.vip, v.vni, v.algorithm);
        for b in &v.backends {
            let _ = writeln!(
                out,
                "    {:<15} {:<9} open {:<5} total {}",
                b.ip, b.state, b.open_flows, b.total_flows
            );
        }
    }
    if !s.published.is_empty() {
        let _ = writeln!(out, "\nPUBLISHED\n  {}", s.published.join("\n  "));
    }
    let _ = writeln!(out, "\nDROPS");
    if s.drops.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (reason, n) in &s.drops {
        let _ = writeln!(out, "  {reason:<24} {n}");
    }
    let _ = writeln!(out, "\nDNS");
    for (name, n) in s.dns.iter().filter(|(_, n)| **n > 0) {
        let _ = writeln!(out, "  {name:<24} {n}");
    }
    out
}

/// The status as Prometheus text (exposition format 0.0.4).
pub fn metrics(s: &Status) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "shoal_manager_connected",
        "gauge",
        "Whether the manager answers (1) or not (0).",
        vec![(
            String::new(),
            u8::from(s.node.manager_connected).to_string(),
        )],
    );
    let traffic = |f: &dyn Fn(&NetworkStatus) -> (u64, u64)| {
        s.networks
            .iter()
            .flat_map(|n| {
                let (out, inn) = f(n);
                [
                    (
                        labels(&[("network", &n.name), ("direction", "out")]),
                        out.to_string(),
                    ),
                    (
                        labels(&[("network", &n.name), ("direction", "in")]),
                        inn.to_string(),
                    ),
                ]
            })
            .collect::<Vec<_>>()
    };
    family(
        "shoal_network_packets_total",
        "counter",
        "Overlay frames to and from other nodes, per network.",
        traffic(&|n| (n.frames_out, n.frames_in)),
    );
    family(
        "shoal_network_bytes_total",
        "counter",
        "Overlay bytes (inner frames) to and from other nodes, per network.",
        traffic(&|n| (n.bytes_out, n.bytes_in)),
    );
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    for m in &s.members {
        *states.entry(m.state.as_str()).or_default() += 1;
    }
    family(
        "shoal_gossip_members",
        "gauge",
        "Gossip members by state (this node not counted).",
        states
            .iter()
            .map(|(k, v)| (labels(&[("state", k)]), v.to_string()))
            .collect(),
    );
    family(
        "shoal_drops_total",
        "counter",
        "Frames the dataplane dropped, by reason.",
        s.drops
            .iter()
            .map(|(r, n)| (labels(&[("reason", r)]), n.to_string()))
            .collect(),
    );
    family(
        "shoal_conntrack_entries",
        "gauge",
        "Balanced flows in the conntrack table.",
        vec![(String::new(), s.conntrack_entries.to_string())],
    );
    let backends = |f: &dyn Fn(&BackendStatus) -> String| {
        s.vips
            .iter()
            .flat_map(|v| {
                v.backends.iter().map(move |b| {
                    let vip = v.vip.to_string();
                    let ip = b.ip.to_string();
                    (labels(&[("vip", &vip), ("backend", &ip)]), f(b))
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        "shoal_backend_connections",
        "gauge",
        "Open balanced connections per VIP backend.",
        backends(&|b| b.open_flows.to_string()),
    );
    family(
        "shoal_backend_connections_total",
        "counter",
        "Connections ever balanced to each VIP backend.",
        backends(&|b| b.total_flows.to_string()),
    );
    let dns = |key: &str| s.dns.get(key).copied().unwrap_or(0);
    family(
        "shoal_dns_queries_total",
        "counter",
        "Queries received by the resolvers.",
        vec![(
            String::new(),
            (dns("queries_udp") + dns("queries_tcp")).to_string(),
        )],
    );
    family(
        "shoal_dns_forwards_total",
        "counter",
        "Queries forwarded to the upstream resolvers.",
        vec![(String::new(), dns("forwarded").to_string())],
    );
    family("shoal_tasks", "gauge", "Tasks on this node by phase.", {
        let mut phases: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &s.tasks {
            *phases.entry(t.phase.as_str()).or_default() += 1;
        }
        phases
            .iter()
            .map(|(k, v)| (labels(&[("phase", k)]), v.to_string()))
            .collect()
    });
    out
}

/// `{k="v",...}` with Prometheus' escapes (backslash, quote, newline).
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            members: vec![MemberStatus {
                name: "n2".into(),
                addr: "192.168.1.2:7946"
                    .parse()
                    .unwrap_or(SocketAddr::from(([0; 4], 0))),
                state: "alive".into(),
            }],
            vips: vec![VipStatus {
                vni: 4096,
                vip: Ipv4Addr::new(10, 0, 1, 2),
                algorithm: "roundrobin".into(),
                backends: vec![BackendStatus {
                    ip: Ipv4Addr::new(10, 0, 1, 3),
                    state: "active".into(),
                    open_flows: 2,
                    total_flows: 7,
                }],
            }],
            networks: vec![NetworkStatus {
                id: "n1".into(),
                name: "blue".into(),
                vni: 4096,
                encrypted: true,
                key_epochs: vec![1],
                frames_out: 5,
                bytes_out: 500,
                frames_in: 4,
                bytes_in: 400,
            }],
            drops: [("no_route\"x".to_owned(), 3)].into_iter().collect(),
            ..Status::default()
        }
    }

    #[test]
    fn every_metric_line_belongs_to_a_declared_family_with_valid_labels() {
        let text = metrics(&sample());
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
            let name = name_labels.split('{').next().unwrap_or_default();
            assert!(declared.iter().any(|d| d == name), "{name} undeclared");
        }
        assert!(
            text.contains("shoal_backend_connections{vip=\"10.0.1.2\",backend=\"10.0.1.3\"} 2")
        );
        assert!(
            text.contains(
                "shoal_backend_connections_total{vip=\"10.0.1.2\",backend=\"10.0.1.3\"} 7"
            )
        );
        assert!(
            text.contains("shoal_drops_total{reason=\"no_route\\\"x\"} 3"),
            "{text}"
        );
        assert!(text.contains("shoal_gossip_members{state=\"alive\"} 1"));
        assert!(text.contains("shoal_network_bytes_total{network=\"blue\",direction=\"out\"} 500"));
        assert!(text.contains("shoal_network_packets_total{network=\"blue\",direction=\"in\"} 4"));
    }

    #[test]
    fn the_text_names_backends_and_drops() {
        let text = render(&sample());
        assert!(text.contains("10.0.1.3") && text.contains("active") && text.contains("no_route"));
    }
}
