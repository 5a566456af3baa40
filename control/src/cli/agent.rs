//! `shoal agent` (and `shoal join`, the same with a token): joins the cluster, or comes back
//! with the identity it saved, then runs the node ([`crate::agent::node::Agent`]) until
//! SIGTERM or SIGINT, which drain and stop its tasks and leave gossip.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use crate::agent::follower::{Identity, follow, reports};
use crate::agent::node::api::{AttachRequest, LocalClient};
use crate::agent::node::{Agent, AgentConfig, DATA_PORT, GOSSIP_PORT};
use crate::manager::api::ApiClient;
use crate::manager::view::NodeView;

/// `shoal agent`: run one, or ask the running one.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentCmd {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    #[command(flatten)]
    pub run: Option<AgentArgs>,
}

#[derive(clap::Subcommand, Debug)]
pub enum AgentAction {
    /// What the agent on this node holds: members, networks, endpoints, VIPs and their
    /// backends with health, drops, DNS.
    Status {
        /// The agent's local API socket.
        #[arg(
            long,
            env = "SHOAL_AGENT_SOCKET",
            default_value = "/run/shoal/agent.sock"
        )]
        socket: PathBuf,
    },
}

/// The VIP balancing algorithms (`--algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AlgorithmArg {
    /// Each task in turn (Docker's).
    Roundrobin,
    /// The task with the fewest open connections.
    Leastconn,
    /// Consistent hashing: every node picks the same task for a flow.
    Maglev,
    /// Two tasks drawn at random, the less busy wins.
    TwoChoices,
}

impl From<AlgorithmArg> for dataplane::balance::Algorithm {
    fn from(a: AlgorithmArg) -> Self {
        use dataplane::balance::Algorithm;
        match a {
            AlgorithmArg::Roundrobin => Algorithm::RoundRobin,
            AlgorithmArg::Leastconn => Algorithm::LeastConnections,
            AlgorithmArg::Maglev => Algorithm::Maglev,
            AlgorithmArg::TwoChoices => Algorithm::TwoChoices,
        }
    }
}

/// The agent's flags.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Join the cluster with this token (from `shoal join-token worker`); the manager gives
    /// the node its id and certificate, saved in --state-dir so that a restart comes back as
    /// the same node. Without it (and nothing saved): a manager run with --insecure and --id.
    #[arg(long)]
    pub token: Option<String>,
    /// The manager to join (as `docker swarm join`): the same as the global --manager.
    #[arg(long, value_name = "MANAGER:2377")]
    pub join: Option<SocketAddr>,
    /// The node id (with --token the manager decides it).
    #[arg(long, default_value = "")]
    pub id: String,
    #[arg(long)]
    pub hostname: String,
    /// The node's underlay address: overlay, gossip and published ports listen on it.
    #[arg(long)]
    pub addr: Ipv4Addr,
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// The overlay (VXLAN) port.
    #[arg(long = "data-port", default_value_t = DATA_PORT)]
    pub data_port: u16,
    /// The gossip port (the same on every node).
    #[arg(long = "gossip-port", default_value_t = GOSSIP_PORT)]
    pub gossip_port: u16,
    /// The node's identity, its tasks' files and logs. Default: /var/lib/shoal/agent/HOSTNAME.
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// Task namespaces are named PREFIX-TASKID. Default: shoal-HOSTNAME.
    #[arg(long = "netns-prefix")]
    pub netns_prefix: Option<String>,
    /// Seconds a stopping task keeps its connections, out of the balancer, before SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long = "stop-timeout", default_value_t = 10.0)]
    pub stop_timeout: f64,
    /// Tasks get no way off their overlays (no egress bridge; their default route is their
    /// first network's gateway).
    #[arg(long = "no-egress")]
    pub no_egress: bool,
    /// The tasks' egress bridge subnet: node addresses (published ports) are reached through
    /// it, nothing else (no NAT).
    #[arg(long = "egress-subnet", default_value = crate::agent::node::egress::DEFAULT_SUBNET)]
    pub egress_subnet: ipnet::Ipv4Net,
    /// How this node's clients' connections to a VIP are spread over its tasks.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Roundrobin)]
    pub algorithm: AlgorithmArg,
    /// The local API's unix socket (attach, status, metrics).
    #[arg(long, env = "SHOAL_AGENT_SOCKET", default_value = crate::agent::node::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Serve Prometheus metrics on this TCP address (`GET /metrics`); they are on the
    /// local API's socket too.
    #[arg(long = "metrics-addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// Follow the manager and report tasks as running without starting anything (tests of
    /// the manager's scheduling).
    #[arg(long = "no-runtime")]
    pub no_runtime: bool,
}

/// What a node saves of its identity once joined.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    node_id: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{flag} {s}: give a number of seconds ≥ 0"))
}

pub fn agent(manager: SocketAddr, insecure: ApiClient, args: AgentArgs) -> Result<(), String> {
    let (manager, insecure) = match args.join {
        Some(addr) => (addr, ApiClient::new(addr)),
        None => (manager, insecure),
    };
    let labels = super::specs::pairs("--label", &args.labels)?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/shoal/agent").join(&args.hostname));
    let identity_file = state_dir.join("node.json");
    // A saved identity of another cluster (its CA is not the token's) is not ours any more;
    // `--no-runtime` (a test of the manager alone) keeps nothing.
    let saved = if args.no_runtime {
        None
    } else {
        load(&identity_file)?.filter(|saved| {
            args.token.as_deref().is_none_or(|token| {
                token
                    .parse::<crate::manager::tokens::Token>()
                    .is_ok_and(|t| {
                        crate::manager::trust::pin_check(&saved.ca_pem, &t.ca_digest).is_ok()
                    })
            })
        })
    };
    let (api, id, register_first) = if let Some(saved) = saved {
        let config = crate::manager::trust::client_config(
            &saved.ca_pem,
            Some((&saved.cert_pem, &saved.key_pem)),
        )
        .map_err(|e| e.to_string())?;
        (ApiClient::with_tls(manager, config), saved.node_id, false)
    } else if let Some(token) = &args.token {
        let joined = super::init::join(manager, token, &args.hostname, args.addr, labels.clone())?;
        if !args.no_runtime {
            save(
                &identity_file,
                &Saved {
                    node_id: joined.node_id.clone(),
                    ca_pem: joined.ca_pem,
                    cert_pem: joined.cert_pem,
                    key_pem: joined.key_pem,
                },
            )?;
        }
        (joined.api, joined.node_id, false)
    } else if args.id.is_empty() {
        return Err(
            "give --token TOKEN to join, or --id ID for a manager run with --insecure".into(),
        );
    } else {
        (insecure, args.id.clone(), true)
    };
    let me = Identity {
        id,
        hostname: args.hostname.clone(),
        addr: args.addr,
        labels,
    };
    println!(
        "shoal agent {} ({}) following the manager at {manager}",
        me.hostname, me.id
    );
    if args.no_runtime {
        follow(
            &api,
            &me,
            register_first,
            &AtomicBool::new(false),
            reports,
            |_| {},
        );
        return Ok(());
    }
    // SIGTERM and SIGINT are waited for by the main thread: blocked before any thread
    // starts, so that every thread inherits the mask (tasks get it cleared).
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT]);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block SIGTERM/SIGINT: {e}"))?;
    let program = std::env::current_exe().map_err(|e| format!("the agent's own path: {e}"))?;
    let mut config = AgentConfig::new(me.clone(), program);
    config.data_port = args.data_port;
    config.gossip_port = args.gossip_port;
    config.state_dir = state_dir;
    if let Some(prefix) = args.netns_prefix {
        config.netns_prefix = prefix;
    }
    config.drain = seconds("--drain", args.drain)?;
    config.stop_timeout = seconds("--stop-timeout", args.stop_timeout)?;
    config.algorithm = args.algorithm.into();
    config.egress = (!args.no_egress).then_some(args.egress_subnet);
    let first = first_view(&api, &me, register_first);
    let agent = std::sync::Arc::new(
        Agent::start(config, api, &first).map_err(|e| format!("starting the agent: {e}"))?,
    );
    crate::agent::node::api::serve(&args.socket, agent.clone())?;
    if let Some(addr) = args.metrics_addr {
        crate::agent::node::api::serve_metrics(addr, agent.clone())?;
    }
    println!(
        "node {} ready: overlay {}, gossip {}:{}, local API {}",
        me.hostname,
        agent.overlay(),
        me.addr,
        args.gossip_port,
        args.socket.display()
    );
    {
        let agent = agent.clone();
        std::thread::Builder::new()
            .name("agent-follow".into())
            .spawn(move || agent.follow(false))
            .map_err(|e| e.to_string())?;
    }
    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    eprintln!(
        "agent {}: {signal:?}: stopping its tasks and leaving",
        me.hostname
    );
    agent.shutdown();
    Ok(())
}

/// The first view, waited for as long as it takes (nothing can be built without it): the
/// gossip keyring and the networks come with it.
fn first_view(api: &ApiClient, me: &Identity, register_first: bool) -> NodeView {
    let mut backoff = Duration::from_millis(100);
    loop {
        let got = (if register_first {
            crate::agent::follower::register(api, me)
        } else {
            Ok(())
        })
        .and_then(|()| api.get::<NodeView>(&format!("/v1/nodes/{}/view?after=0", me.id)));
        match got {
            Ok(view) => return view,
            Err(e) => {
                eprintln!("agent {}: {e}; retrying in {backoff:?}", me.hostname);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn load(path: &Path) -> Result<Option<Saved>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "{}: {e}: the node's saved identity is damaged; remove it to join again with --token",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Saved readable by root only: the key is the node's credential.
fn save(path: &Path, saved: &Saved) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let json = serde_json::to_vec_pretty(saved).map_err(|e| e.to_string())?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&json))
        .map_err(fail)
}

/// `shoal agent status`: asks the agent on this node.
pub fn status(socket: &Path, json: bool) -> Result<(), String> {
    let status = LocalClient::new(socket)
        .status()
        .map_err(|e| e.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", crate::agent::node::report::render(&status));
    }
    Ok(())
}

/// `shoal attach`: a namespace onto an attachable network, through the local agent.
pub fn attach(socket: &Path, request: &AttachRequest, json: bool) -> Result<(), String> {
    let a = LocalClient::new(socket)
        .attach(request)
        .map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "attached {} to {}: {} {} (mac {}, mtu {}), gateway {}, DNS {}",
            a.container, a.network, a.ifname, a.address, a.mac, a.mtu, a.gateway, a.dns
        );
    }
    Ok(())
}

/// `shoal detach`: one network of a container, or all of them.
pub fn detach(socket: &Path, container: &str, network: Option<&str>) -> Result<(), String> {
    let gone = LocalClient::new(socket)
        .detach(container, network)
        .map_err(|e| e.to_string())?;
    if gone.is_empty() {
        println!("{container}: nothing attached");
    }
    for a in gone {
        println!(
            "detached {} from {} ({})",
            a.container, a.network, a.address
        );
    }
    Ok(())
}

/// `shoal attachments`: what the local agent has attached.
pub fn attachments(socket: &Path, json: bool) -> Result<(), String> {
    let all = LocalClient::new(socket)
        .attachments()
        .map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            vec![
                a.container.clone(),
                a.network.clone(),
                a.ifname.clone(),
                a.address.clone(),
                a.netns.display().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        super::render::table(
            &["CONTAINER", "NETWORK", "INTERFACE", "ADDRESS", "NETNS"],
            &rows
        )
    );
    Ok(())
}
