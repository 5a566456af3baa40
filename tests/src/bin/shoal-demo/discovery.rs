//! The demo's service discovery: the resolver at 127.0.0.11 inside every container, asked
//! with `dig` from a few of them.

use std::io;

use dns::shell::{ListenSockets, RESOLVER_ADDR};
use dns::{DnsConfig, DnsServer, EndpointMode, Scope, ServiceRecord, TaskRecord, Update};
use tests::cluster::Cluster;

use super::APPS;

/// Starts the resolver, serves every application container, asks, prints. The resolver stops
/// when this returns.
pub fn show(cluster: &Cluster) -> io::Result<()> {
    // No upstream: the demo sends nothing outside the namespaces it made, so names the
    // tables do not hold get SERVFAIL rather than the host's resolver's answer.
    let config = DnsConfig {
        upstreams: Some(Vec::new()),
        ..DnsConfig::default()
    };
    let server = DnsServer::start(config)?;
    for network in ["public", "secret"] {
        apply(
            &server,
            Update::SetNetwork {
                network: network.into(),
                internal: false,
                ingress: false,
            },
        )?;
    }
    let task = |service: &str, slot: u32, container: &str, network: &str| TaskRecord {
        name: format!("{service}.{slot}.demo{slot}"),
        ip: cluster.ip(container, network),
        enabled: true,
    };
    let service = |name: &str, mode, vip, tasks| ServiceRecord {
        name: name.into(),
        mode,
        vip,
        aliases: Vec::new(),
        tasks,
        ports: Vec::new(),
    };
    let web_vip = cluster.network("public").host(100);
    let web = service(
        "web",
        EndpointMode::Vip,
        Some(web_vip),
        vec![
            task("web", 1, "web-1", "public"),
            task("web", 2, "web-2", "public"),
        ],
    );
    let db = service(
        "db",
        EndpointMode::Dnsrr,
        None,
        vec![
            task("db", 1, "db-1", "secret"),
            task("db", 2, "db-2", "secret"),
        ],
    );
    apply(
        &server,
        Update::SetService {
            network: "public".into(),
            service: web,
        },
    )?;
    apply(
        &server,
        Update::SetService {
            network: "secret".into(),
            service: db,
        },
    )?;
    for app in APPS {
        let spec = cluster
            .spec
            .containers
            .iter()
            .find(|c| c.name == app)
            .ok_or_else(|| io::Error::other(app))?;
        let networks: Vec<String> = spec
            .attachments
            .iter()
            .map(|(ni, _)| cluster.spec.networks[*ni].name.to_string())
            .filter(|n| n != "ingress")
            .collect();
        let ns = cluster.container(app).ns.clone();
        let sockets = cluster
            .testbed
            .run_in(&ns, || ListenSockets::bind(RESOLVER_ADDR))?;
        server
            .add_endpoint(
                app,
                sockets,
                Scope {
                    networks,
                    user_ndots: false,
                },
            )
            .map_err(io::Error::other)?;
    }

    println!(
        "\nService discovery (dig @127.0.0.11 inside the container; names are network-scoped):"
    );
    let asks = [
        ("api-1", "web"),
        ("api-1", "tasks.web"),
        ("api-1", "db"),
        ("api-1", "web.2.demo2"),
        ("web-1", "web"),
        ("web-1", "db"),
        ("db-1", "web"),
    ];
    for (from, name) in asks {
        println!("  {from:<6} {name:<12} -> {}", dig(cluster, from, name));
    }
    println!("  (web is a VIP service, db answers its tasks in turn (dnsrr); web-1 is not on");
    println!("   secret, so db does not exist for it, and the demo forwards nowhere: SERVFAIL)");
    Ok(())
}

fn apply(server: &DnsServer, update: Update) -> io::Result<()> {
    server.apply(update).map_err(io::Error::other)
}

/// The A records dig got, or its status when there were none.
fn dig(cluster: &Cluster, from: &str, name: &str) -> String {
    let ns = &cluster.container(from).netns_name;
    let out = cluster
        .testbed
        .exec(ns, &["dig", "@127.0.0.11", "+time=2", "+tries=1", name]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut addrs: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    addrs.sort();
    if !addrs.is_empty() {
        return addrs.join(" ");
    }
    match text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
    {
        Some(status) => status.to_string(),
        None => "no answer (is dnsutils installed?)".to_string(),
    }
}
