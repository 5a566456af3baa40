#![allow(clippy::unwrap_used)]
//! VIP balancing through the dataplanes of a three-node cluster (root, network namespaces):
//! real kernel TCP clients in containers, backends that say who they are.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use dataplane::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec};
use dataplane::forward::Update;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, PUBLIC};
use tests::traffic::{EchoServer, connect_error, read_line, who_answers};

const PORT: u16 = 80;
const TASKS: [&str; 4] = ["t1", "t2", "t3", "t4"];

/// Tasks t1 (n1), t2 (n2), t3 and t4 (n3); clients c1 (n1) and c2 (n2); all on public.
struct Mesh {
    cluster: Cluster,
    _servers: Vec<EchoServer>,
}

impl Mesh {
    fn start(test: &str) -> Mesh {
        let spec = ClusterSpec::public_and_secret(vec![
            ContainerSpec::new("t1", 0, &[(PUBLIC, 11)]),
            ContainerSpec::new("t2", 1, &[(PUBLIC, 12)]),
            ContainerSpec::new("t3", 2, &[(PUBLIC, 13)]),
            ContainerSpec::new("t4", 2, &[(PUBLIC, 14)]),
            ContainerSpec::new("c1", 0, &[(PUBLIC, 21)]),
            ContainerSpec::new("c2", 1, &[(PUBLIC, 22)]),
        ]);
        let cluster = Cluster::start(test, spec).unwrap();
        let servers = TASKS
            .iter()
            .map(|t| {
                let addr = SocketAddr::from((cluster.ip(t, "public"), PORT));
                EchoServer::whoami(&cluster.container(t).ns, addr, t).unwrap()
            })
            .collect();
        Mesh {
            cluster,
            _servers: servers,
        }
    }

    fn vip(&self) -> Ipv4Addr {
        self.cluster.network("public").host(100)
    }

    fn set(&self, backends: &[(&str, BackendState)]) {
        let spec = ServiceSpec {
            vni: self.cluster.network("public").vni,
            vip: self.vip(),
            algorithm: Algorithm::RoundRobin,
            backends: backends
                .iter()
                .map(|(t, state)| BackendSpec {
                    ip: self.cluster.ip(t, "public"),
                    state: *state,
                })
                .collect(),
        };
        self.cluster
            .apply_everywhere(&Update::SetService(spec))
            .unwrap();
    }

    fn set_active(&self, tasks: &[&str]) {
        let backends: Vec<(&str, BackendState)> =
            tasks.iter().map(|t| (*t, BackendState::Active)).collect();
        self.set(&backends);
    }

    fn vip_addr(&self) -> SocketAddr {
        SocketAddr::from((self.vip(), PORT))
    }

    /// `count` connections from `client` through the VIP: (task, address the task saw).
    fn connections(&self, client: &str, count: usize) -> Vec<(String, String)> {
        let lines = who_answers(
            &self.cluster.container(client).ns,
            self.vip_addr(),
            count,
            Duration::from_secs(5),
        )
        .unwrap();
        lines
            .into_iter()
            .map(|l| {
                let (task, peer) = l
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("greeting {l:?}"));
                (task.to_owned(), peer.to_owned())
            })
            .collect()
    }
}

#[test]
fn round_robin_spreads_4000_connections_from_two_nodes_evenly_and_backends_see_the_clients() {
    let mesh = Mesh::start("lb_round_robin");
    mesh.set_active(&TASKS);
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for client in ["c1", "c2"] {
        let own = mesh.cluster.ip(client, "public").to_string();
        for (task, peer) in mesh.connections(client, 2000) {
            assert_eq!(peer, own, "{task} saw {peer}, not the client {own}");
            *per_task.entry(task).or_default() += 1;
        }
    }
    assert_eq!(per_task.len(), 4, "{per_task:?}");
    let max = *per_task.values().max().unwrap() as f64;
    assert!(
        max / 1000.0 <= 1.02,
        "max/mean {:.3}: {per_task:?}",
        max / 1000.0
    );
    // The flows were counted per backend on the clients' nodes.
    let stats = mesh.cluster.stats().unwrap();
    let totals: u64 = stats
        .iter()
        .flat_map(|s| &s.vips)
        .flat_map(|v| &v.backends)
        .map(|b| b.total)
        .sum();
    assert_eq!(totals, 4000);
    // People ping service names.
    assert!(mesh.cluster.ping("c1", mesh.vip()));
}

#[test]
fn scaled_to_zero_the_vip_refuses_at_once_and_serves_again_when_backends_return() {
    let mesh = Mesh::start("lb_scale_zero");
    mesh.set_active(&[]);
    let (err, took) = connect_error(
        &mesh.cluster.container("c1").ns,
        mesh.vip_addr(),
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    mesh.set_active(&["t2"]);
    let served = mesh.connections("c1", 3);
    assert!(served.iter().all(|(t, _)| t == "t2"), "{served:?}");
}

#[test]
fn a_draining_backend_finishes_its_connection_and_a_removed_one_is_reset() {
    let mesh = Mesh::start("lb_lifecycle");
    mesh.set_active(&["t1", "t3"]);
    let ns = mesh.cluster.container("c2").ns.clone();
    let vip = mesh.vip_addr();
    let mut held = dataplane::shell::netns::in_netns(&ns, move || {
        TcpStream::connect_timeout(&vip, Duration::from_secs(5))
    })
    .unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let greeting = read_line(&mut held).unwrap();
    let first = greeting.split(' ').next().unwrap().to_owned();
    let other = if first == "t1" { "t3" } else { "t1" };

    // Draining: the held connection still echoes; new connections all go to the other task.
    mesh.set(&[
        (&first, BackendState::Draining),
        (other, BackendState::Active),
    ]);
    held.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    held.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still here");
    let fresh = mesh.connections("c2", 20);
    assert!(fresh.iter().all(|(t, _)| t == other), "{fresh:?}");

    // Removed (its task died): the held connection is reset on its next packet.
    mesh.set_active(&[other]);
    held.write_all(b"anyone?").unwrap();
    let mut buf = [0u8; 16];
    let err = held.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(mesh.connections("c2", 5).iter().all(|(t, _)| t == other));
}

#[test]
fn a_task_calling_its_own_service_is_served_by_another_task() {
    let mesh = Mesh::start("lb_self");
    mesh.set_active(&TASKS);
    let served = mesh.connections("t1", 30);
    assert!(served.iter().all(|(t, _)| t != "t1"), "{served:?}");
    assert_eq!(
        served.iter().filter(|(t, _)| t == "t2").count(),
        10,
        "the others in turn: {served:?}"
    );
}
