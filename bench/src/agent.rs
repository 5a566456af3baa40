//! The agent's idle memory (issue 7): one `shoal agent` holding 100 local endpoints (a
//! service of 100 tasks placed on its node, each a namespace with a TAP and a resolver) and
//! 1,000 remote peer entries (written into the network's peer table by a gossip member this
//! program runs, as 1,000 endpoints of another node would be), measured resident after it
//! settles; beside it, in the same run, a HashiCorp Serf agent alone, the anchor (14 MiB in
//! `shared/anchors`). The cluster is two nodes of the testbed (`tests::swarm`): the manager
//! and a second agent on n0, the measured agent on n1.
//!
//! Environment: `SETTLE` (seconds idle before the readings, 20), `SAMPLES` (5, one a
//! second; the median is reported), `SHOAL_BIN`, `AGENT_OUT` (the results folder).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use control::agent::peers::PeerRecord;
use control::gossip::netdb;
use control::gossip::shell::{GossipConfig, GossipNode};
use control::gossip::wire::keyring::{Key, Keyring};
use control::manager::api::ApiClient;
use control::manager::state::State;
use dataplane::shell::netns::{NetnsRef, in_netns};
use tests::swarm::{MANAGER_PORT, Swarm};

use crate::{Machine, Table, env_number, median, rss_kib, utc_now};

const ENDPOINTS: usize = 100;
const REMOTE_PEERS: usize = 1000;
const TARGET_MIB: f64 = 30.0;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The median of `samples` readings of `pid`'s RSS, one a second, in MiB.
fn settled_rss(pid: u32, samples: u64) -> Option<f64> {
    let readings: Vec<f64> = (0..samples)
        .filter_map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            rss_kib(pid).map(mib)
        })
        .collect();
    median(&readings)
}

/// The manager's state, read with the CLI's credentials from inside the manager's node.
fn state(swarm: &Swarm) -> Result<State, String> {
    let certs = swarm.certs_dir();
    let read = |f: &str| {
        std::fs::read_to_string(certs.join(f))
            .map_err(|e| format!("{}: {e}", certs.join(f).display()))
    };
    let config = control::manager::trust::client_config(
        &read("ca.pem")?,
        Some((&read("cli.pem")?, &read("cli.key")?)),
    )
    .map_err(|e| e.to_string())?;
    let api = ApiClient::with_tls(SocketAddr::from((swarm.manager_ip(), MANAGER_PORT)), config);
    in_netns(&swarm.nodes[0].ns, move || {
        api.get::<State>("/v1/state").map_err(std::io::Error::other)
    })
    .map_err(|e| format!("the manager's state: {e}"))
}

/// A gossip member on n0 that joins the cluster with its key and writes `REMOTE_PEERS`
/// endpoints of a fictitious node into `network`'s peer table.
fn write_remote_peers(swarm: &Swarm, state: &State, network: &str) -> Result<GossipNode, String> {
    let keys = &state.gossip_keys;
    let primary = keys
        .tx
        .and_then(|tx| keys.epochs.iter().find(|e| e.epoch == tx))
        .or(keys.epochs.last())
        .ok_or("the cluster has no gossip key")?;
    let key = Key::new(&primary.key.0).map_err(|e| e.to_string())?;
    let bind = SocketAddr::from((swarm.nodes[0].underlay_ip, 7950));
    let seed = SocketAddr::from((swarm.nodes[1].underlay_ip, 7946));
    let config = GossipConfig {
        name: "bench-peers".into(),
        bind,
        keyring: Some(Keyring::new(key)),
        config: netdb::Config::default(),
    };
    let node = in_netns(&swarm.nodes[0].ns, move || GossipNode::start(config))
        .map_err(|e| format!("the peer writer's gossip node: {e}"))?;
    if node.join(&[seed]) == 0 {
        return Err(format!("the peer writer could not join through {seed}"));
    }
    node.join_network(network);
    let far = SocketAddr::from((Ipv4Addr::new(192, 168, 77, 200), 4789));
    for i in 0..REMOTE_PEERS {
        // 10.96.8.0 onwards: clear of the tasks' addresses at the start of the subnet.
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 8, 0)) + i as u32);
        let o = ip.octets();
        let record = PeerRecord {
            ip,
            mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
            node: far,
        };
        let (key, value) = PeerRecord::entry(network, &format!("remote-{i}"), &record);
        node.write(key, Some(value))
            .map_err(|e| format!("writing peer {i}: {e}"))?;
    }
    Ok(node)
}

/// A Serf agent alone in n0's namespace: its settled RSS, MiB.
fn serf_alone(swarm: &Swarm, settle: u64, samples: u64) -> Result<f64, String> {
    let ns = match &swarm.nodes[0].ns {
        NetnsRef::Path(p) => p.display().to_string(),
        NetnsRef::Pid(pid) => format!("/proc/{pid}/ns/net"),
    };
    let mut child = Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .args([
            "--",
            "serf",
            "agent",
            "-node=anchor",
            "-bind=127.0.0.1:7951",
            "-rpc-addr=127.0.0.1:7374",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("serf agent: {e} (apt-get install serf)"))?;
    std::thread::sleep(Duration::from_secs(settle.min(10)));
    let rss = settled_rss(child.id(), samples);
    let _ = child.kill();
    let _ = child.wait();
    rss.ok_or_else(|| "serf's RSS could not be read".into())
}

pub fn run() -> Result<(), String> {
    let settle = env_number("SETTLE", 20)?;
    let samples = env_number("SAMPLES", 5)?.max(1);
    let out_dir = std::env::var_os("AGENT_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"));
    let shoal = crate::shoal_binary();
    if !shoal.exists() {
        return Err(format!(
            "no shoal binary at {}: `cargo build --release -p control` or set SHOAL_BIN",
            shoal.display()
        ));
    }
    let shoal = shoal.display().to_string();
    eprintln!("agent: a 2-node cluster, {ENDPOINTS} tasks on n1");
    let mut swarm = Swarm::new(
        "bench-agent",
        &shoal,
        2,
        &["--drain", "0", "--stop-timeout", "1"],
    );
    swarm.start_agents();
    swarm.cli_ok(&["network", "create", "idle", "--subnet", "10.96.0.0/20"]);
    swarm.cli_ok(&[
        "service",
        "create",
        "idle",
        "--replicas",
        &ENDPOINTS.to_string(),
        "--network",
        "idle",
        "--constraint",
        "node.hostname==n1",
        "-d",
    ]);
    swarm.wait_running("idle", ENDPOINTS, Duration::from_secs(300));
    let pid = swarm.agent_pid(1).ok_or("the agent of n1 is not running")?;
    std::thread::sleep(Duration::from_secs(settle));
    let endpoints_only = settled_rss(pid, samples).ok_or("the agent's RSS could not be read")?;

    let state = state(&swarm)?;
    let network = state
        .networks
        .values()
        .find(|n| n.spec.name == "idle")
        .map(|n| n.id.clone())
        .ok_or("network idle is not in the manager's state")?;
    eprintln!("agent: {REMOTE_PEERS} remote peer entries into network {network}");
    let writer = write_remote_peers(&swarm, &state, &network)?;
    std::thread::sleep(Duration::from_secs(settle));
    let idle = settled_rss(pid, samples).ok_or("the agent's RSS could not be read")?;
    drop(writer);
    let serf = serf_alone(&swarm, settle, samples)?;
    drop(swarm);

    let machine = Machine::probe();
    let when = utc_now();
    let ratio = idle / serf;
    let mut table = Table::new(&["", "RSS (MiB)", "× Serf"]);
    table.row(&["Serf agent alone (anchor)", &format!("{serf:.1}"), "1.00"]);
    table.row(&[
        &format!("shoal agent, {ENDPOINTS} endpoints"),
        &format!("{endpoints_only:.1}"),
        &format!("{:.2}", endpoints_only / serf),
    ]);
    table.row(&[
        &format!("shoal agent, {ENDPOINTS} endpoints + {REMOTE_PEERS} remote peers"),
        &format!("{idle:.1}"),
        &format!("{ratio:.2}"),
    ]);
    let verdict = if idle < TARGET_MIB { "met" } else { "NOT met" };
    let md = format!(
        "# Agent idle memory\n\n{when}; {} CPUs, {}, kernel {}.\n\n\
         One `shoal agent` (release build) with {ENDPOINTS} local endpoints (a service of \
         {ENDPOINTS} `shoal whoami` tasks on its node: a namespace, a TAP and a resolver \
         each) and {REMOTE_PEERS} remote peer entries (written into the network's peer \
         table by a gossip member, as another node's endpoints would be: routes in its \
         dataplane), resident after {settle} s idle, median of {samples} readings a second \
         apart; beside it, in the same run, a Serf agent alone.\n\n{}\n\
         Target: under {TARGET_MIB} MiB — {verdict}.\n",
        machine.nproc,
        machine.cpu,
        machine.kernel,
        table.to_markdown()
    );
    let json = serde_json::json!({
        "when": when,
        "machine": machine.to_json(),
        "endpoints": ENDPOINTS,
        "remote_peers": REMOTE_PEERS,
        "idle_rss_mib": idle,
        "endpoints_only_rss_mib": endpoints_only,
        "serf_rss_mib": serf,
        "ratio_to_serf": ratio,
        "target_mib": TARGET_MIB,
    });
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let write = |name: &str, text: String| {
        let path = out_dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("agent.md", md.clone())?;
    write(
        "agent.json",
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n",
    )?;
    print!("{md}");
    Ok(())
}
