//! The demo's balancing: connections to the `web` service through its VIP from a container,
//! and through a published port on every node from outside the cluster.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dataplane::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec};
use dataplane::forward::Update;
use dataplane::mesh::{MeshConfig, Protocol, PublishedPort, RoutingMesh};
use tests::cluster::Cluster;
use tests::traffic::{EchoServer, who_answers};

const TASKS: [&str; 2] = ["web-1", "web-2"];
const PUBLISHED: u16 = 8080;
const CONNECTIONS: usize = 200;

pub fn show(cluster: &mut Cluster) -> io::Result<()> {
    let mut servers = Vec::new();
    for task in TASKS {
        // One listener on every address of the task: its public and its ingress address.
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80));
        servers.push(EchoServer::whoami(&cluster.container(task).ns, addr, task)?);
    }
    let web_vip = cluster.network("public").host(100);
    set_service(cluster, "public", web_vip)?;
    println!("\nBalancing through the VIP (web = {web_vip}, round-robin, at the client's node):");
    let from_api = who_answers(
        &cluster.container("api-1").ns,
        SocketAddr::from((web_vip, 80)),
        CONNECTIONS,
        Duration::from_secs(5),
    )?;
    println!(
        "  api-1 -> {web_vip}:80  {CONNECTIONS} connections  {}",
        shares(&from_api)
    );

    // The routing mesh: the ingress network's VIP for web, a relay in every node's sandbox.
    let ingress_vip = cluster.network("ingress").host(100);
    set_service(cluster, "ingress", ingress_vip)?;
    let mut meshes = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        let sandbox = &cluster.container(&format!("ingress-sbox-{}", n + 1)).ns;
        let mesh = RoutingMesh::start(sandbox, Some(node.node.ns.clone()), MeshConfig::default())?;
        mesh.publish(PublishedPort {
            protocol: Protocol::Tcp,
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PUBLISHED)),
            target: SocketAddr::from((ingress_vip, 80)),
            proxy_protocol: false,
        })
        .map_err(io::Error::other)?;
        meshes.push(mesh);
    }
    let outside = cluster.testbed.add_node("outside");
    println!(
        "\nThe routing mesh (port {PUBLISHED} published on every node, asked from `outside` {}):",
        outside.underlay_ip
    );
    for node in &cluster.nodes {
        let dst = SocketAddr::from((node.node.underlay_ip, PUBLISHED));
        let served = who_answers(&outside.ns, dst, CONNECTIONS, Duration::from_secs(5))?;
        println!(
            "  {:<4} {dst}  {CONNECTIONS} connections  {}",
            node.node.name,
            shares(&served)
        );
    }
    println!("  (web-1 runs on n1, web-2 on n2; n3 runs no web task and serves both all the same)");
    Ok(())
}

fn set_service(cluster: &Cluster, network: &str, vip: Ipv4Addr) -> io::Result<()> {
    let spec = ServiceSpec {
        vni: cluster.network(network).vni,
        vip,
        algorithm: Algorithm::RoundRobin,
        backends: TASKS
            .iter()
            .map(|t| BackendSpec {
                ip: cluster.ip(t, network),
                state: BackendState::Active,
            })
            .collect(),
    };
    cluster.apply_everywhere(&Update::SetService(spec))
}

/// "web-1: 100  web-2: 100" from the greetings (`<task> <client address>`).
fn shares(greetings: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for g in greetings {
        *counts
            .entry(g.split(' ').next().unwrap_or("?"))
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(task, n)| format!("{task}: {n}"))
        .collect::<Vec<_>>()
        .join("  ")
}
