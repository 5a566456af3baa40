//! The topology, built once per run: a three-node shoal cluster with one overlay network
//! (`ingress`, VNI 4100, 10.255.0.0/24) that carries both the east-west VIP and the routing
//! mesh, as Docker's ingress network does for published ports.
//!
//! | container | node | address | role |
//! | --- | --- | --- | --- |
//! | t1 .. t4 | n1, n2, n3, n3 | .11 .. .14 | the service's tasks: a [`Backend`] on :80 each |
//! | t5 .. t10 | n1, n2, n3, n1, n2, n3 | .15 .. .20 | six more tasks, only for the Maglev disruption run |
//! | c1 | n1 | .21 | the client of the VIP and of HAProxy |
//! | c2 | n1 | .22 | the client of the direct path |
//! | c3 | n1 | .23 | the client of the Maglev disruption run |
//! | hap | n1 | .50 | HAProxy, bound on .50:9000, in front of t1 .. t4 |
//! | sb1 .. sb3 | n1 .. n3 | .201 .. .203 | each node's ingress sandbox, with a `RoutingMesh` |
//!
//! plus `outside`, a namespace on the underlay outside the cluster: the client of the published
//! port, which every node publishes (`0.0.0.0:8080` → VIP:80) and which the client reaches at
//! n1's underlay address. The VIP (.100) balances t1 .. t4; a second VIP (.101, Maglev) all ten
//! tasks. The underlay cannot reach overlay addresses, so HAProxy runs where a Swarm user would
//! run it: in a container on the same overlay network, on the client's node; its backends are
//! the same four tasks over the same overlay path as the VIP's.
//!
//! Why three clients on n1: a client's kernel derives a connection's initial sequence number
//! and timestamp offset from the address it connects to (the VIP, not the task). When the same
//! client address and port reach one task once through a VIP and once directly (or through
//! another VIP) within the task's TIME_WAIT (60 s), the task may refuse the new SYN (PAWS or
//! an older sequence number) and the client waits 1 s to send it again. That is true of any
//! DNAT balancer (Docker's IPVS too) and would pollute the figures, so each way to the tasks
//! from n1 has its own client address.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use dataplane::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec};
use dataplane::forward::Update;
use dataplane::mesh::{MeshConfig, Protocol, PublishedPort, RoutingMesh};
use dataplane::shell::netns::NetnsRef;
use tests::Node;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, NetworkSpec};

use super::backend::Backend;
use super::client;
use super::haproxy;

/// The one overlay network.
pub(super) const NET: &str = "ingress";
/// Every task; the service's are the first [`SERVICE_TASKS`].
pub(super) const TASKS: [&str; 10] = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10"];
pub(super) const SERVICE_TASKS: usize = 4;
const TASK_NODES: [usize; 10] = [0, 1, 2, 2, 0, 1, 2, 0, 1, 2];
const SANDBOXES: [&str; 3] = ["sb1", "sb2", "sb3"];
const CLIENT: &str = "c1";
const DIRECT_CLIENT: &str = "c2";
const MAGLEV_CLIENT: &str = "c3";
const HAPROXY: &str = "hap";
/// The direct path's task: on n2, so the path crosses the overlay like 3 of the VIP's 4 tasks.
pub(super) const DIRECT_TASK: &str = "t2";
const VIP_HOST: u32 = 100;
const MAGLEV_VIP_HOST: u32 = 101;
pub(super) const PORT: u16 = 80;
pub(super) const PUBLISHED: u16 = 8080;
pub(super) const HAPROXY_PORT: u16 = 9000;

/// The four ways to the tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
    Haproxy,
    Vip,
    Published,
    Direct,
}

impl Target {
    pub(super) const ALL: [Target; 4] = [
        Target::Haproxy,
        Target::Vip,
        Target::Published,
        Target::Direct,
    ];

    pub(super) fn key(self) -> &'static str {
        match self {
            Target::Haproxy => "haproxy",
            Target::Vip => "vip",
            Target::Published => "published",
            Target::Direct => "direct",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Target::Haproxy => "HAProxy (c1 → hap:9000 → t1..t4)",
            Target::Vip => "VIP (c1 → VIP:80, balanced by n1's dataplane)",
            Target::Published => "published port (outside → n1:8080 → sb1 → VIP:80)",
            Target::Direct => "direct (c2 → t2:80, no balancer)",
        }
    }

    /// The tasks that should answer.
    pub(super) fn tasks(self) -> &'static [&'static str] {
        match self {
            Target::Direct => &["t2"],
            _ => &TASKS[..SERVICE_TASKS],
        }
    }
}

/// The running topology. Field order is drop order: relays and backends stop before the
/// cluster's dataplanes, and the testbed (last, inside the cluster) kills HAProxy and deletes
/// every namespace.
#[derive(Debug)]
pub(super) struct Lab {
    pub meshes: Vec<RoutingMesh>,
    _backends: Vec<Backend>,
    pub haproxy_pid: u32,
    pub haproxy_cfg: String,
    pub outside: Node,
    pub cluster: Cluster,
    work: PathBuf,
}

/// The run's temporary directory (HAProxy's configuration).
pub(super) fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("shoal-mesh-bench-{}", std::process::id()))
}

/// An I/O error as a message naming what failed.
fn err(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

impl Lab {
    pub(super) fn build() -> Result<Lab, String> {
        let mut containers: Vec<ContainerSpec> = TASKS
            .iter()
            .enumerate()
            .map(|(i, t)| ContainerSpec::new(t, TASK_NODES[i], &[(0, 11 + i as u32)]))
            .collect();
        containers.push(ContainerSpec::new(CLIENT, 0, &[(0, 21)]));
        containers.push(ContainerSpec::new(DIRECT_CLIENT, 0, &[(0, 22)]));
        containers.push(ContainerSpec::new(MAGLEV_CLIENT, 0, &[(0, 23)]));
        containers.push(ContainerSpec::new(HAPROXY, 0, &[(0, 50)]));
        for (n, sb) in SANDBOXES.iter().enumerate() {
            containers.push(ContainerSpec::new(sb, n, &[(0, 201 + n as u32)]));
        }
        let spec = ClusterSpec {
            nodes: 3,
            underlay_mtu: 1500,
            offload: true,
            networks: vec![NetworkSpec::new(NET, 4100, "10.255.0.0/24", false)],
            containers,
        };
        let mut cluster = Cluster::start("mesh_bench", spec).map_err(err("cluster"))?;
        let outside = cluster.testbed.add_node("outside");

        // The anchor's client-side settings, inside this run's namespaces only: a roomy
        // ephemeral port range and TIME_WAIT reuse wherever connections start (clients,
        // HAProxy, the sandboxes' relays) or end (tasks, nodes).
        let mut namespaces: Vec<String> = cluster
            .containers
            .iter()
            .map(|c| c.netns_name.clone())
            .collect();
        namespaces.extend(cluster.nodes.iter().map(|n| n.node.netns_name.clone()));
        namespaces.push(outside.netns_name.clone());
        for ns in &namespaces {
            let out = cluster.testbed.exec(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_local_port_range=1024 65000",
                    "net.ipv4.tcp_tw_reuse=1",
                ],
            );
            if !out.status.success() {
                return Err(format!(
                    "sysctl in {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }

        let mut backends = Vec::new();
        for t in TASKS {
            let addr = SocketAddr::from((cluster.ip(t, NET), PORT));
            backends
                .push(Backend::start(&cluster.container(t).ns, addr, t).map_err(err("backend"))?);
        }

        let mut meshes = Vec::new();
        for (sb, node) in SANDBOXES.iter().zip(&cluster.nodes) {
            let mesh = RoutingMesh::start(
                &cluster.container(sb).ns,
                Some(node.node.ns.clone()),
                MeshConfig::default(),
            )
            .map_err(err("routing mesh"))?;
            meshes.push(mesh);
        }

        let work = work_dir();
        std::fs::create_dir_all(&work).map_err(err("work dir"))?;
        let hap_listen = SocketAddr::from((cluster.ip(HAPROXY, NET), HAPROXY_PORT));
        let servers: Vec<(String, SocketAddr)> = TASKS[..SERVICE_TASKS]
            .iter()
            .map(|t| (t.to_string(), SocketAddr::from((cluster.ip(t, NET), PORT))))
            .collect();
        let haproxy_cfg = haproxy::config(hap_listen, &servers);
        let hap_ns = cluster.container(HAPROXY).netns_name.clone();
        let haproxy_pid = haproxy::start(
            &mut cluster.testbed,
            &hap_ns,
            &haproxy_cfg,
            &work,
            hap_listen,
        )?;

        let lab = Lab {
            meshes,
            _backends: backends,
            haproxy_pid,
            haproxy_cfg,
            outside,
            cluster,
            work,
        };
        lab.set_service(Algorithm::RoundRobin)?;
        lab.set_maglev_service(TASKS.len())?;
        let vip = SocketAddr::from((lab.vip(), PORT));
        for mesh in &lab.meshes {
            mesh.publish(PublishedPort {
                protocol: Protocol::Tcp,
                listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PUBLISHED)),
                target: vip,
                proxy_protocol: false,
            })
            .map_err(|e| format!("publish: {e}"))?;
        }
        Ok(lab)
    }

    pub(super) fn vip(&self) -> Ipv4Addr {
        self.cluster.network(NET).host(VIP_HOST)
    }

    pub(super) fn maglev_vip(&self) -> Ipv4Addr {
        self.cluster.network(NET).host(MAGLEV_VIP_HOST)
    }

    pub(super) fn task_ip(&self, task: &str) -> Ipv4Addr {
        self.cluster.ip(task, NET)
    }

    /// The name of the task at `ip`, if it is one.
    pub(super) fn task_at(&self, ip: Ipv4Addr) -> Option<&'static str> {
        TASKS.iter().copied().find(|t| self.task_ip(t) == ip)
    }

    fn service(&self, vip: Ipv4Addr, algorithm: Algorithm, tasks: &[&str]) -> Result<(), String> {
        let spec = ServiceSpec {
            vni: self.cluster.network(NET).vni,
            vip,
            algorithm,
            backends: tasks
                .iter()
                .map(|t| BackendSpec {
                    ip: self.task_ip(t),
                    state: BackendState::Active,
                })
                .collect(),
        };
        self.cluster
            .apply_everywhere(&Update::SetService(spec))
            .map_err(|e| format!("set service {vip}: {e}"))
    }

    /// The VIP's algorithm (its backends: t1 .. t4), on every node.
    pub(super) fn set_service(&self, algorithm: Algorithm) -> Result<(), String> {
        self.service(self.vip(), algorithm, &TASKS[..SERVICE_TASKS])
    }

    /// The Maglev VIP with the first `n` of the ten tasks, on every node.
    pub(super) fn set_maglev_service(&self, n: usize) -> Result<(), String> {
        self.service(self.maglev_vip(), Algorithm::Maglev, &TASKS[..n])
    }

    /// Where a target's client connects.
    pub(super) fn addr(&self, target: Target) -> SocketAddr {
        match target {
            Target::Haproxy => SocketAddr::from((self.cluster.ip(HAPROXY, NET), HAPROXY_PORT)),
            Target::Vip => SocketAddr::from((self.vip(), PORT)),
            Target::Published => {
                SocketAddr::from((self.cluster.nodes[0].node.underlay_ip, PUBLISHED))
            }
            Target::Direct => SocketAddr::from((self.task_ip(DIRECT_TASK), PORT)),
        }
    }

    /// The namespace a target's client runs in.
    pub(super) fn client_ns(&self, target: Target) -> &NetnsRef {
        match target {
            Target::Published => &self.outside.ns,
            Target::Direct => &self.cluster.container(DIRECT_CLIENT).ns,
            _ => &self.cluster.container(CLIENT).ns,
        }
    }

    /// The namespaces a target's connections pass through between client and tasks, where
    /// connections end and start again: HAProxy's container; n1 (the published port's
    /// listener) and its sandbox (the relay's connections to the VIP).
    pub(super) fn middle_ns(&self, target: Target) -> Vec<&NetnsRef> {
        match target {
            Target::Haproxy => vec![&self.cluster.container(HAPROXY).ns],
            Target::Published => vec![
                &self.cluster.nodes[0].node.ns,
                &self.cluster.container(SANDBOXES[0]).ns,
            ],
            Target::Vip | Target::Direct => Vec::new(),
        }
    }

    /// The namespaces of the service's four tasks.
    pub(super) fn task_ns(&self) -> Vec<&NetnsRef> {
        TASKS[..SERVICE_TASKS]
            .iter()
            .map(|t| &self.cluster.container(t).ns)
            .collect()
    }

    /// The Maglev disruption run's client.
    pub(super) fn maglev_client_ns(&self) -> &NetnsRef {
        &self.cluster.container(MAGLEV_CLIENT).ns
    }

    /// The smoke test of the anchor: 8 connections per target, one at a time, every one
    /// answered by one of the target's tasks.
    pub(super) fn smoke(&self) -> Result<(), String> {
        for target in Target::ALL {
            let out = client::run(
                self.client_ns(target),
                self.addr(target),
                8,
                1,
                Duration::from_secs(10),
            )
            .map_err(|e| format!("smoke test of {}: {e}", target.key()))?;
            let foreign: Vec<&String> = out
                .per_backend
                .keys()
                .filter(|k| !target.tasks().contains(&k.as_str()))
                .collect();
            if out.ok != 8 || out.error_count() != 0 || !foreign.is_empty() {
                return Err(format!(
                    "smoke test of {} at {}: ok={} errors={:?} answers={:?}",
                    target.key(),
                    self.addr(target),
                    out.ok,
                    out.errors,
                    out.per_backend
                ));
            }
        }
        Ok(())
    }

    /// Flows each task of the VIP was given by n1's balancer so far (n1 balances both the VIP
    /// client c1 and n1's sandbox).
    pub(super) fn vip_totals(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let vip = self.vip();
        if let Ok(stats) = self.cluster.nodes[0].dataplane.stats() {
            for v in stats.vips.iter().filter(|v| v.vip == vip) {
                for b in &v.backends {
                    if let Some(t) = self.task_at(b.ip) {
                        out.insert(t.to_string(), b.total);
                    }
                }
            }
        }
        out
    }

    /// The Maglev client's address and the Maglev VIP's, for flows with fixed source ports.
    pub(super) fn maglev_flow(&self, sport: u16) -> (SocketAddrV4, SocketAddrV4) {
        (
            SocketAddrV4::new(self.cluster.ip(MAGLEV_CLIENT, NET), sport),
            SocketAddrV4::new(self.maglev_vip(), PORT),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
