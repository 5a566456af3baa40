#![allow(clippy::unwrap_used)]
//! The routing mesh (root, network namespaces): published ports on every node of a
//! three-node cluster, reached from a namespace outside the cluster on the underlay, relayed
//! from each node's ingress sandbox to the service VIP on the ingress network.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use dataplane::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec};
use dataplane::forward::Update;
use dataplane::mesh::{MeshConfig, Protocol, PublishedPort, RoutingMesh, proxy_v2};
use dataplane::shell::netns::{NetnsRef, in_netns};
use tests::Node;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, NetworkSpec};
use tests::traffic::{EchoServer, UdpEchoServer, read_line, who_answers};

const INGRESS: usize = 0;
const TASKS: [&str; 4] = ["t1", "t2", "t3", "t4"];
const PUBLISHED: u16 = 8080;

/// Tasks t1 (n1), t2 (n2), t3 and t4 (n3) on the ingress network; a sandbox per node; a
/// mesh per node; a client namespace `outside` on the underlay.
struct Lab {
    meshes: Vec<RoutingMesh>,
    _servers: Vec<EchoServer>,
    _udp: Vec<UdpEchoServer>,
    outside: Node,
    cluster: Cluster,
}

impl Lab {
    fn start(test: &str, config: MeshConfig) -> Lab {
        let mut containers: Vec<ContainerSpec> = TASKS
            .iter()
            .enumerate()
            .map(|(i, t)| ContainerSpec::new(t, [0, 1, 2, 2][i], &[(INGRESS, 11 + i as u32)]))
            .collect();
        for (n, sandbox) in ["sb1", "sb2", "sb3"].iter().enumerate() {
            containers.push(ContainerSpec::new(sandbox, n, &[(INGRESS, 201 + n as u32)]));
        }
        let spec = ClusterSpec {
            nodes: 3,
            underlay_mtu: 1500,
            offload: true,
            networks: vec![NetworkSpec::new("ingress", 4100, "10.255.0.0/24", false)],
            containers,
        };
        let mut cluster = Cluster::start(test, spec).unwrap();
        let outside = cluster.testbed.add_node("outside");
        let mut servers = Vec::new();
        let mut udp = Vec::new();
        for t in TASKS {
            let ip = cluster.ip(t, "ingress");
            servers.push(
                EchoServer::whoami(&cluster.container(t).ns, SocketAddr::from((ip, 80)), t)
                    .unwrap(),
            );
            udp.push(
                UdpEchoServer::start(&cluster.container(t).ns, SocketAddr::from((ip, 53))).unwrap(),
            );
        }
        let meshes = ["sb1", "sb2", "sb3"]
            .iter()
            .zip(&cluster.nodes)
            .map(|(sb, node)| {
                RoutingMesh::start(
                    &cluster.container(sb).ns,
                    Some(node.node.ns.clone()),
                    config,
                )
                .unwrap()
            })
            .collect();
        let lab = Lab {
            meshes,
            _servers: servers,
            _udp: udp,
            outside,
            cluster,
        };
        lab.set_backends(&TASKS);
        lab
    }

    fn vip(&self) -> Ipv4Addr {
        self.cluster.network("ingress").host(100)
    }

    fn set_backends(&self, tasks: &[&str]) {
        let spec = ServiceSpec {
            vni: self.cluster.network("ingress").vni,
            vip: self.vip(),
            algorithm: Algorithm::RoundRobin,
            backends: tasks
                .iter()
                .map(|t| BackendSpec {
                    ip: self.cluster.ip(t, "ingress"),
                    state: BackendState::Active,
                })
                .collect(),
        };
        self.cluster
            .apply_everywhere(&Update::SetService(spec))
            .unwrap();
    }

    /// Publishes `published` → VIP:`target` on every node.
    fn publish(&self, protocol: Protocol, published: u16, target: u16, proxy_protocol: bool) {
        for mesh in &self.meshes {
            mesh.publish(PublishedPort {
                protocol,
                listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, published)),
                target: SocketAddr::from((self.vip(), target)),
                proxy_protocol,
            })
            .unwrap();
        }
    }

    fn node_addr(&self, node: usize, port: u16) -> SocketAddr {
        SocketAddr::from((self.cluster.nodes[node].node.underlay_ip, port))
    }

    fn outside(&self) -> &NetnsRef {
        &self.outside.ns
    }

    /// A connection from outside the cluster to `dst`, reads bounded by 5 s.
    fn connect(&self, dst: SocketAddr) -> TcpStream {
        let stream = in_netns(self.outside(), move || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(5))
        })
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

/// Connects from outside to `dst`, and returns how long until the mesh closed the connection
/// without a byte served (panics if something was served).
#[allow(clippy::disallowed_methods)] // tests measure wall time
fn closed_unserved_after(lab: &Lab, dst: SocketAddr) -> Duration {
    let started = std::time::Instant::now();
    let mut stream = lab.connect(dst);
    let mut buf = [0u8; 16];
    assert_eq!(
        stream.read(&mut buf).unwrap_or(0),
        0,
        "closed, nothing served"
    );
    started.elapsed()
}

#[test]
fn a_published_port_on_every_node_spreads_connections_over_every_task() {
    let lab = Lab::start("mesh_spread", MeshConfig::default());
    lab.publish(Protocol::Tcp, PUBLISHED, 80, false);
    let per_node = 4000;
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for node in 0..3 {
        let lines = who_answers(
            lab.outside(),
            lab.node_addr(node, PUBLISHED),
            per_node,
            Duration::from_secs(5),
        )
        .unwrap();
        let sandbox = lab
            .cluster
            .ip(["sb1", "sb2", "sb3"][node], "ingress")
            .to_string();
        for line in lines {
            let (task, peer) = line.split_once(' ').unwrap();
            assert_eq!(peer, sandbox, "tasks see the node's ingress address");
            *per_task.entry(task.to_owned()).or_default() += 1;
        }
    }
    let mean = (3 * per_node) as f64 / 4.0;
    let max = *per_task.values().max().unwrap() as f64;
    assert_eq!(per_task.len(), 4, "{per_task:?}");
    assert!(
        max / mean <= 1.02,
        "max/mean {:.3}: {per_task:?}",
        max / mean
    );
    let stats: u64 = lab
        .meshes
        .iter()
        .flat_map(|m| m.stats())
        .map(|s| s.total)
        .sum();
    assert_eq!(stats, 3 * per_node as u64);
}

#[test]
fn with_proxy_protocol_the_task_learns_the_real_client() {
    let lab = Lab::start("mesh_proxy_v2", MeshConfig::default());
    lab.publish(Protocol::Tcp, 8081, 80, true);
    let dst = lab.node_addr(1, 8081);
    let mut stream = lab.connect(dst);
    let _greeting = read_line(&mut stream).unwrap();
    // The whoami task echoes what it received: first of all, the header the mesh sent it.
    let mut header = [0u8; 28];
    stream.read_exact(&mut header).unwrap();
    let (client, local, _) = proxy_v2::parse(&header).unwrap();
    assert_eq!(client.ip(), std::net::IpAddr::V4(lab.outside.underlay_ip));
    assert_eq!(local, dst);
    // And the connection carries on: half-close reaches the task and its echo comes back.
    stream.write_all(b"bye").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");
}

#[test]
fn scaled_to_zero_a_published_port_closes_clients_at_once_and_serves_again_later() {
    let lab = Lab::start("mesh_scale_zero", MeshConfig::default());
    lab.publish(Protocol::Tcp, PUBLISHED, 80, false);
    lab.set_backends(&[]);
    let dst = lab.node_addr(0, PUBLISHED);
    let took = closed_unserved_after(&lab, dst);
    assert!(took < Duration::from_millis(500), "closed after {took:?}");
    lab.set_backends(&["t3"]);
    let lines = who_answers(lab.outside(), dst, 3, Duration::from_secs(5)).unwrap();
    assert!(lines.iter().all(|l| l.starts_with("t3 ")), "{lines:?}");
    let failed: u64 = lab.meshes[0].stats().iter().map(|s| s.connect_failed).sum();
    assert_eq!(failed, 1);
}

#[test]
fn a_backend_that_never_answers_times_the_connect_out_and_closes_the_client() {
    let config = MeshConfig {
        connect_timeout: Duration::from_millis(800),
        ..MeshConfig::default()
    };
    let lab = Lab::start("mesh_blackhole", config);
    // t1's interface goes down: SYNs to it vanish without an answer.
    let t1 = lab.cluster.container("t1").netns_name.clone();
    lab.cluster
        .testbed
        .exec_ok(&t1, &["ip", "link", "set", "eth0", "down"]);
    lab.set_backends(&["t1"]);
    lab.publish(Protocol::Tcp, PUBLISHED, 80, false);
    let took = closed_unserved_after(&lab, lab.node_addr(2, PUBLISHED));
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[test]
fn a_published_udp_port_relays_datagrams_both_ways() {
    let lab = Lab::start("mesh_udp", MeshConfig::default());
    lab.publish(Protocol::Udp, 5353, 53, false);
    let dst = lab.node_addr(0, 5353);
    let replies = in_netns(lab.outside(), move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut replies = Vec::new();
        for i in 0..5u8 {
            socket.send_to(&[b'q', i], dst)?;
            let mut buf = [0u8; 16];
            let (n, from) = socket.recv_from(&mut buf)?;
            replies.push((buf[..n].to_vec(), from));
        }
        Ok(replies)
    })
    .unwrap();
    for (i, (reply, from)) in replies.iter().enumerate() {
        assert_eq!(reply, &[b'q', i as u8]);
        assert_eq!(*from, dst, "replies come from the published port");
    }
    let stats = lab.meshes[0].stats();
    assert_eq!(stats[0].total, 1, "one client, one session");
    assert!(lab.meshes[0].unpublish(Protocol::Udp, 5353));
}

#[test]
fn publishing_a_port_twice_is_refused_with_the_port_named() {
    let lab = Lab::start("mesh_twice", MeshConfig::default());
    lab.publish(Protocol::Tcp, PUBLISHED, 80, false);
    let again = lab.meshes[0].publish(PublishedPort {
        protocol: Protocol::Tcp,
        listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PUBLISHED)),
        target: SocketAddr::from((lab.vip(), 80)),
        proxy_protocol: false,
    });
    let err = again.unwrap_err().to_string();
    assert!(
        err.contains("8080") && err.contains("already published"),
        "{err}"
    );
    assert!(lab.meshes[0].unpublish(Protocol::Tcp, PUBLISHED));
    assert!(!lab.meshes[0].unpublish(Protocol::Tcp, PUBLISHED));
}

#[test]
fn mode_host_listens_only_where_the_task_runs_and_goes_straight_to_it() {
    let lab = Lab::start("mesh_mode_host", MeshConfig::default());
    // t3 runs on n3: only n3 publishes, straight to t3's address (no VIP, no balancing).
    let t3 = SocketAddr::from((lab.cluster.ip("t3", "ingress"), 80));
    lab.meshes[2]
        .publish(PublishedPort {
            protocol: Protocol::Tcp,
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090)),
            target: t3,
            proxy_protocol: false,
        })
        .unwrap();
    let lines = who_answers(
        lab.outside(),
        lab.node_addr(2, 9090),
        10,
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(lines.iter().all(|l| l.starts_with("t3 ")), "{lines:?}");
    let elsewhere = tests::traffic::connect_error(
        lab.outside(),
        lab.node_addr(0, 9090),
        Duration::from_secs(2),
    );
    let (err, _) = elsewhere.unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "n1 does not listen: {err}"
    );
}
