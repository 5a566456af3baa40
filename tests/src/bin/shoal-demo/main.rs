//! `shoal-demo`: a three-node cluster on this host, built from network namespaces, with a
//! plain and an encrypted network and the ingress network; prints who reaches whom, what the
//! names resolve to inside the containers, how connections to a service spread over its tasks
//! (through its VIP, and through a published port on every node), and what each node's
//! dataplane counted, then removes everything. The forerunner of `shoal lab` (which will
//! deploy stacks through the manager and agents); this one feeds the dataplanes and the
//! resolver directly.
//!
//! Needs root. All traffic stays inside the namespaces it creates.

mod discovery;
mod services;

use std::process::ExitCode;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, NetworkSpec, PUBLIC, SECRET};

/// Index of the ingress network in [`spec`].
const INGRESS: usize = 2;
/// The application containers (the rest are the nodes' ingress sandboxes).
const APPS: [&str; 5] = ["web-1", "web-2", "api-1", "db-1", "db-2"];

fn spec() -> ClusterSpec {
    let mut spec = ClusterSpec::public_and_secret(vec![
        ContainerSpec::new("web-1", 0, &[(PUBLIC, 2), (INGRESS, 2)]),
        ContainerSpec::new("web-2", 1, &[(PUBLIC, 3), (INGRESS, 3)]),
        ContainerSpec::new("api-1", 2, &[(PUBLIC, 4), (SECRET, 4)]),
        ContainerSpec::new("db-1", 1, &[(SECRET, 2)]),
        ContainerSpec::new("db-2", 2, &[(SECRET, 3)]),
        ContainerSpec::new("ingress-sbox-1", 0, &[(INGRESS, 201)]),
        ContainerSpec::new("ingress-sbox-2", 1, &[(INGRESS, 202)]),
        ContainerSpec::new("ingress-sbox-3", 2, &[(INGRESS, 203)]),
    ]);
    spec.networks
        .push(NetworkSpec::new("ingress", 4098, "10.255.0.0/24", false));
    spec
}

fn main() -> ExitCode {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("shoal-demo needs root: it creates network namespaces and TAP devices");
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<()> {
    let spec = spec();
    println!(
        "Building a {}-node overlay in network namespaces...",
        spec.nodes
    );
    let mut cluster = Cluster::start("demo", spec)?;
    println!("\nNodes (underlay 192.168.77.0/24, one dataplane thread each, UDP 4789):");
    for n in &cluster.nodes {
        println!("  {:<4} {}", n.node.name, n.node.underlay_ip);
    }
    println!("\nNetworks:");
    for n in &cluster.spec.networks {
        let kind = if n.encrypted {
            "encrypted (ChaCha20-Poly1305)"
        } else {
            "plain VXLAN"
        };
        let mtu = cluster.nodes[0].dataplane.overlay_mtu(n.encrypted);
        println!(
            "  {:<7} VNI {}  {}  MTU {mtu}  {kind}",
            n.name, n.vni, n.subnet
        );
    }
    println!("\nContainers:");
    for c in cluster
        .spec
        .containers
        .iter()
        .filter(|c| APPS.contains(&c.name))
    {
        let addrs: Vec<String> = c
            .attachments
            .iter()
            .map(|(ni, _)| {
                let net = &cluster.spec.networks[*ni];
                format!("{} {}", net.name, cluster.ip(c.name, net.name))
            })
            .collect();
        println!("  {:<6} on n{}  {}", c.name, c.node + 1, addrs.join(", "));
    }

    println!("\nWho reaches whom (ping from row to column, each address of the column):");
    let names = APPS;
    print!("  {:<8}", "");
    for to in &names {
        print!("{to:<14}");
    }
    println!();
    for from in &names {
        print!("  {from:<8}");
        for to in &names {
            let cell = if from == to {
                "-".to_string()
            } else {
                reach(&cluster, from, to)
            };
            print!("{cell:<14}");
        }
        println!();
    }
    println!("  (a container reaches only the networks it is attached to; the rest is refused)");

    discovery::show(&cluster)?;
    services::show(&mut cluster)?;

    println!("\nDataplane counters:");
    for (n, stats) in cluster.nodes.iter().zip(cluster.stats()?) {
        let c = &stats.core;
        let drops: Vec<String> = c
            .drop_counts()
            .filter(|(_, count)| *count > 0)
            .map(|(r, count)| format!("{}={count}", r.as_str()))
            .collect();
        println!(
            "  {:<4} encapsulated={} decapsulated={} local={} arp_replies={} drops: {}",
            n.node.name,
            c.encapsulated,
            c.decapsulated,
            c.local_delivered,
            c.arp_replies,
            if drops.is_empty() {
                "none".to_string()
            } else {
                drops.join(" ")
            }
        );
    }
    println!("\nRemoving the namespaces.");
    Ok(())
}

/// "ok"/"no" per network of the destination, e.g. "public:ok".
fn reach(cluster: &Cluster, from: &str, to: &str) -> String {
    let spec = cluster
        .spec
        .containers
        .iter()
        .find(|c| c.name == to)
        .expect("in spec");
    let ns = &cluster.container(from).netns_name;
    spec.attachments
        .iter()
        .filter(|(ni, _)| *ni != INGRESS)
        .map(|(ni, _)| {
            let net = cluster.spec.networks[*ni].name;
            let ip = cluster.ip(to, net).to_string();
            let out = cluster
                .testbed
                .exec(ns, &["ping", "-c", "1", "-W", "1", &ip]);
            let mark = if out.status.success() { "ok" } else { "no" };
            format!("{}:{mark}", &net[..3])
        })
        .collect::<Vec<_>>()
        .join(" ")
}
