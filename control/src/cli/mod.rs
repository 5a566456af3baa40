//! `shoal`, the command line: the manager process itself (`shoal manager`) and docker-like
//! commands against its API.
//!
//! - [`args`]: the commands and flags (clap);
//! - [`specs`]: flag values into specs (`--publish`, `--network`, `KEY=VALUE`);
//! - [`render`]: Docker-like tables.

pub(crate) mod agent;
mod args;
mod gossip;
mod init;
mod network;
mod node;
pub(crate) mod render;
mod service;
mod specs;
mod stack;

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use serde::de::DeserializeOwned;

use std::time::Duration;

use crate::manager::api::join::Tokens;
use crate::manager::api::{ApiClient, PlainListener, ServeOptions, TlsListener, serve};
use crate::manager::ipam::PoolConfig;
use crate::manager::trust::{client_config, server_config};
use crate::manager::{Applied, Command, Manager};
use args::{Cli, Format, RoleArg, Top};

/// Runs the command line; the error, if any, is printed for the user.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    log_to_stderr(&cli.command);
    if let Top::Lab(cmd) = cli.command {
        return match crate::lab::run(cmd, cli.format == Format::Json) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(message) => {
                eprintln!("Error: {message}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines on stderr: `SHOAL_LOG` (tracing's filter syntax) decides; by default the
/// daemons (agent, manager) say what they do (info), the commands only what went wrong.
fn log_to_stderr(command: &Top) {
    let daemon = matches!(command, Top::Agent(_) | Top::Join(_) | Top::Manager { .. });
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if daemon { "info" } else { "warn" })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<(), String> {
    // The commands that need no manager run before its client is built, so that a missing
    // credentials folder (SHOAL_CERTS) does not stop them.
    let command = match cli.command {
        Top::Gossip(member) => return gossip::gossip(&member),
        Top::Whoami { ports, name, node } => {
            return crate::agent::whoami::run(crate::agent::whoami::Config::new(ports, name, node));
        }
        Top::Agent(agent::AgentCmd {
            action: Some(agent::AgentAction::Status { socket }),
            ..
        }) => return agent::status(&socket, cli.format == Format::Json),
        // The node's agent, not the manager, answers these.
        Top::Attach {
            network,
            netns,
            container,
            name,
            ifname,
            socket,
        } => {
            let container = container
                .or_else(|| netns.file_name().map(|n| n.to_string_lossy().into_owned()))
                .ok_or("give --container ID: the namespace path names none")?;
            let request = crate::agent::node::api::AttachRequest {
                container,
                name,
                network,
                netns,
                ifname: Some(ifname),
            };
            return agent::attach(&socket, &request, cli.format == Format::Json);
        }
        Top::Detach {
            container,
            network,
            socket,
        } => return agent::detach(&socket, &container, network.as_deref()),
        Top::Attachments { socket } => {
            return agent::attachments(&socket, cli.format == Format::Json);
        }
        other => other,
    };
    let api = client(cli.manager, cli.certs.as_deref())?;
    let out = Out { format: cli.format };
    match command {
        Top::Manager {
            listen,
            state,
            node_down_after,
            key_rotation_hours,
            insecure,
        } => {
            let options = ServeOptions {
                node_down_after: Duration::from_secs(node_down_after),
                key_rotation: Duration::from_secs(key_rotation_hours.max(1) * 3600),
            };
            run_manager(listen, &state, options, insecure)
        }
        Top::Init {
            state,
            advertise,
            certs_out,
            pool,
            mask_length,
        } => {
            let pool_net: ipnet::Ipv4Net = pool.parse().map_err(|_| {
                format!("--default-addr-pool {pool:?}: write an IPv4 CIDR like 10.0.0.0/8")
            })?;
            if mask_length < pool_net.prefix_len() || mask_length > 29 {
                return Err(format!(
                    "--default-addr-pool-mask-length {mask_length}: between the pool's /{} and /29",
                    pool_net.prefix_len()
                ));
            }
            let ingress = pool_net
                .subnets(mask_length)
                .ok()
                .and_then(|mut s| s.next())
                .ok_or("the pool has no subnet of that size")?;
            let config = PoolConfig {
                pool: pool_net,
                prefix_len: mask_length,
                ingress,
                ..PoolConfig::default()
            };
            init::init(&state, advertise, &certs_out, config)
        }
        Top::Join(args) => {
            if args.token.is_none() {
                return Err("shoal join needs --token TOKEN (from `shoal join-token worker`)".into());
            }
            agent::agent(cli.manager, api, args)
        }
        Top::JoinToken { role, rotate } => {
            let role = match role {
                RoleArg::Worker => "worker",
                RoleArg::Manager => "manager",
            };
            let tokens: Tokens = if rotate {
                api.post(&format!("/v1/join-tokens/{role}/rotate"), &())
                    .map_err(|e| e.to_string())?
            } else {
                fetch(&api, "/v1/join-tokens")?
            };
            let token = if role == "worker" {
                tokens.worker
            } else {
                tokens.manager
            };
            println!(
                "To add a {role} to this cluster, run:\n\n    shoal agent --join {} --token {token} --hostname HOST --addr ADDR\n",
                cli.manager
            );
            Ok(())
        }
        Top::Agent(agent::AgentCmd { run: Some(args), .. }) => {
            agent::agent(cli.manager, api, args)
        }
        Top::Agent(agent::AgentCmd { action: None, run: None }) => {
            Err("shoal agent needs --hostname and --addr (and --token to join), or a command: `shoal agent status`".into())
        }
        // Run above, before the client.
        Top::Gossip(_)
        | Top::Whoami { .. }
        | Top::Agent(_)
        | Top::Attach { .. }
        | Top::Detach { .. }
        | Top::Attachments { .. }
        | Top::Lab(_) => Ok(()),
        Top::Node(cmd) => node::node(&api, &out, cmd),
        Top::Network(cmd) => network::network(&api, &out, cmd),
        Top::Service(cmd) => service::service(&api, &out, cmd),
        Top::Stack(cmd) => stack::stack(&api, &out, cmd),
    }
}

fn run_manager(
    listen: std::net::SocketAddr,
    path: &std::path::Path,
    options: ServeOptions,
    insecure: bool,
) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let manager = Manager::open(path, PoolConfig::default()).map_err(|e| e.to_string())?;
    let tls = match (manager.trust(), insecure) {
        (Some(trust), _) => Some(
            server_config(
                &trust.ca_cert_pem,
                &trust.manager_cert_pem,
                &trust.manager_key_pem,
            )
            .map_err(|e| e.to_string())?,
        ),
        (None, true) => None,
        (None, false) => {
            return Err(format!(
                "{} has no cluster CA: run `shoal init --state {}` first (or --insecure for a test on loopback without TLS)",
                path.display(),
                path.display()
            ));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        // The first line says where: with --listen …:0 the caller learns the port from it.
        println!(
            "shoal manager listening on {bound}, state in {}",
            path.display()
        );
        match tls {
            Some(config) => {
                let listener = TlsListener::new(listener, config).map_err(|e| e.to_string())?;
                serve(listener, manager, options).await
            }
            None => serve(PlainListener(listener), manager, options).await,
        }
        .map_err(|e| e.to_string())
    })
}

/// Prints either the JSON of a value or its human rendering.
pub(crate) struct Out {
    pub(crate) format: Format,
}

impl Out {
    /// JSON for programs (`--format json`), tables for people.
    pub(crate) fn new(json: bool) -> Out {
        Out {
            format: if json { Format::Json } else { Format::Table },
        }
    }

    pub(crate) fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        match self.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            ),
            Format::Table => println!("{}", human()),
        }
    }
}

/// The API client: TLS with the CLI's credentials when --certs names them, plain otherwise.
pub(crate) fn client(
    manager: std::net::SocketAddr,
    certs: Option<&std::path::Path>,
) -> Result<ApiClient, String> {
    let Some(dir) = certs else {
        return Ok(ApiClient::new(manager));
    };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| {
            format!(
                "{}: {e} (the credentials `shoal init` wrote)",
                dir.join(name).display()
            )
        })
    };
    let (ca, cert, key) = (read("ca.pem")?, read("cli.pem")?, read("cli.key")?);
    let config = client_config(&ca, Some((&cert, &key))).map_err(|e| e.to_string())?;
    Ok(ApiClient::with_tls(manager, config))
}

pub(super) fn apply(api: &ApiClient, command: Command) -> Result<Applied, String> {
    api.post("/v1/commands", &command)
        .map_err(|e| e.to_string())
}

pub(super) fn fetch<T: DeserializeOwned>(api: &ApiClient, path: &str) -> Result<T, String> {
    api.get(path).map_err(|e| e.to_string())
}

/// A model enum as its lower-case serde name (what users type back).
pub(crate) fn lower<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
