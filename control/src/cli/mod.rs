//! `shoal`, the command line: the manager process itself (`shoal manager`) and docker-like
//! commands against its API.
//!
//! - [`args`]: the commands and flags (clap);
//! - [`specs`]: flag values into specs (`--publish`, `--network`, `KEY=VALUE`);
//! - [`render`]: Docker-like tables.

mod args;
mod init;
mod render;
mod specs;

use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::agent::follower::{Identity, follow};
use crate::manager::api::join::Tokens;
use crate::manager::api::{ApiClient, PlainListener, ServeOptions, TlsListener, serve};
use crate::manager::ipam::PoolConfig;
use crate::manager::model::{
    Availability, EndpointMode, NetworkSpec, Role, ServiceMode, ServiceSpec, TaskState,
};
use crate::manager::trust::{client_config, server_config};
use crate::manager::{Applied, Command, Manager, State};
use args::{AvailabilityArg, Cli, Format, NetworkCmd, NodeCmd, RoleArg, ServiceCmd, StackCmd, Top};
use render::table;

/// Runs the command line; the error, if any, is printed for the user.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let api = client(cli.manager, cli.certs.as_deref())?;
    let out = Out { format: cli.format };
    match cli.command {
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
        } => init::init(&state, advertise, &certs_out),
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
                "To add a {role} to this cluster, run:\n\n    shoal --manager {} agent --token {token} --hostname HOST --addr ADDR\n",
                cli.manager
            );
            Ok(())
        }
        Top::Agent {
            no_runtime,
            token,
            id,
            hostname,
            addr,
            labels,
        } => {
            if !no_runtime {
                return Err("the task runtime is not built yet: run `shoal agent --no-runtime ...`, which follows the manager and reports tasks as running without starting them".into());
            }
            let labels = specs::pairs("--label", &labels)?;
            let (api, me, joined) =
                match token {
                    Some(token) => {
                        let (api, id) = init::join(cli.manager, &token, &hostname, addr)?;
                        (
                            api,
                            Identity {
                                id,
                                hostname,
                                addr,
                                labels,
                            },
                            true,
                        )
                    }
                    None if id.is_empty() => return Err(
                        "give --token TOKEN to join, or --id ID for a manager run with --insecure"
                            .into(),
                    ),
                    None => (
                        api,
                        Identity {
                            id,
                            hostname,
                            addr,
                            labels,
                        },
                        false,
                    ),
                };
            println!(
                "shoal agent {} ({}) following the manager at {}",
                me.hostname, me.id, cli.manager
            );
            follow(&api, &me, !joined, &Arc::new(AtomicBool::new(false)));
            Ok(())
        }
        Top::Node(cmd) => node(&api, &out, cmd),
        Top::Network(cmd) => network(&api, &out, cmd),
        Top::Service(cmd) => service(&api, &out, cmd),
        Top::Stack(StackCmd::Deploy { file, name }) => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let applied: Vec<Applied> = api
                .post_text(&format!("/v1/stacks/{name}"), &text)
                .map_err(|e| e.to_string())?;
            out.print(&applied, || {
                format!("Deployed stack {name} ({} changes)", applied.len())
            });
            Ok(())
        }
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
struct Out {
    format: Format,
}

impl Out {
    fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
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
fn client(
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

fn apply(api: &ApiClient, command: Command) -> Result<Applied, String> {
    api.post("/v1/commands", &command)
        .map_err(|e| e.to_string())
}

fn fetch<T: DeserializeOwned>(api: &ApiClient, path: &str) -> Result<T, String> {
    api.get(path).map_err(|e| e.to_string())
}

fn node(api: &ApiClient, out: &Out, cmd: NodeCmd) -> Result<(), String> {
    match cmd {
        NodeCmd::Add {
            id,
            hostname,
            addr,
            role,
            labels,
        } => {
            let role = match role {
                RoleArg::Manager => Role::Manager,
                RoleArg::Worker => Role::Worker,
            };
            let labels = specs::pairs("--label", &labels)?;
            let applied = apply(
                api,
                Command::AddNode {
                    id: id.clone(),
                    hostname,
                    role,
                    addr,
                    labels,
                },
            )?;
            out.print(&applied, || id);
        }
        NodeCmd::Ls => {
            let state: State = fetch(api, "/v1/state")?;
            let rows: Vec<Vec<String>> = state
                .nodes
                .values()
                .map(|n| {
                    vec![
                        n.id.clone(),
                        n.hostname.clone(),
                        lower(&n.status),
                        lower(&n.availability),
                        lower(&n.role),
                        n.addr.to_string(),
                    ]
                })
                .collect();
            out.print(&state.nodes, || {
                table(
                    &[
                        "ID",
                        "HOSTNAME",
                        "STATUS",
                        "AVAILABILITY",
                        "ROLE",
                        "ADDRESS",
                    ],
                    &rows,
                )
            });
        }
        NodeCmd::Update {
            node,
            availability,
            label_add,
            label_rm,
        } => {
            let availability = availability.map(|a| match a {
                AvailabilityArg::Active => Availability::Active,
                AvailabilityArg::Pause => Availability::Pause,
                AvailabilityArg::Drain => Availability::Drain,
            });
            let labels_add = specs::pairs("--label-add", &label_add)?;
            let applied = apply(
                api,
                Command::UpdateNode {
                    node: node.clone(),
                    availability,
                    role: None,
                    labels_add,
                    labels_rm: label_rm,
                },
            )?;
            out.print(&applied, || node);
        }
    }
    Ok(())
}

fn network(api: &ApiClient, out: &Out, cmd: NetworkCmd) -> Result<(), String> {
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            subnet,
            attachable,
            internal,
            opts,
        } => {
            if driver != "overlay" {
                return Err(format!(
                    "network {name:?}: driver {driver:?} does not exist in a swarm: use --driver overlay"
                ));
            }
            let subnet = subnet
                .map(|s| {
                    s.parse()
                        .map_err(|_| format!("--subnet {s:?}: write an IPv4 CIDR like 10.1.0.0/24"))
                })
                .transpose()?;
            let encrypted = opts
                .iter()
                .any(|o| o == "encrypted" || o == "encrypted=true");
            if let Some(other) = opts.iter().find(|o| !o.starts_with("encrypted")) {
                return Err(format!(
                    "--opt {other:?}: the overlay driver knows only `encrypted`"
                ));
            }
            let spec = NetworkSpec {
                name,
                subnet,
                attachable,
                internal,
                encrypted,
            };
            let applied = apply(api, Command::CreateNetwork(spec))?;
            out.print(&applied, || applied.id.clone().unwrap_or_default());
        }
        NetworkCmd::Ls => {
            let state: State = fetch(api, "/v1/state")?;
            let rows: Vec<Vec<String>> = state
                .networks
                .values()
                .map(|n| {
                    let flags = [
                        (n.ingress, "ingress"),
                        (n.spec.attachable, "attachable"),
                        (n.spec.internal, "internal"),
                        (n.spec.encrypted, "encrypted"),
                    ];
                    let flags: Vec<&str> = flags
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, f)| *f)
                        .collect();
                    vec![
                        n.id.clone(),
                        n.spec.name.clone(),
                        n.subnet.to_string(),
                        n.vni.to_string(),
                        flags.join(","),
                    ]
                })
                .collect();
            out.print(&state.networks, || {
                table(&["ID", "NAME", "SUBNET", "VNI", "OPTIONS"], &rows)
            });
        }
        NetworkCmd::RotateKey { name } => {
            let applied: Applied = api
                .post(&format!("/v1/networks/{name}/rotate-key"), &())
                .map_err(|e| e.to_string())?;
            out.print(&applied, || {
                format!("network {name}: a new key goes out (sent with once every node holds it)")
            });
        }
        NetworkCmd::Rm { name } => {
            let applied = apply(
                api,
                Command::RemoveNetwork {
                    network: name.clone(),
                },
            )?;
            out.print(&applied, || name);
        }
    }
    Ok(())
}

fn service(api: &ApiClient, out: &Out, cmd: ServiceCmd) -> Result<(), String> {
    match cmd {
        ServiceCmd::Create {
            name,
            replicas,
            mode,
            networks,
            publish,
            endpoint_mode,
            constraints,
            env,
            detach,
            command,
        } => {
            let mode = match (mode.as_str(), replicas) {
                ("global", Some(_)) => return Err("--replicas does not go with --mode global: a global service runs one task per node".into()),
                ("global", None) => ServiceMode::Global,
                (_, replicas) => ServiceMode::Replicated { replicas: replicas.unwrap_or(1) },
            };
            let spec = ServiceSpec {
                name,
                mode,
                networks: networks
                    .iter()
                    .map(|n| specs::network(n))
                    .collect::<Result<_, _>>()?,
                endpoint_mode: if endpoint_mode == "dnsrr" {
                    EndpointMode::Dnsrr
                } else {
                    EndpointMode::Vip
                },
                ports: publish
                    .iter()
                    .map(|p| specs::publish(p))
                    .collect::<Result<_, _>>()?,
                constraints: constraints
                    .iter()
                    .map(|c| c.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e: crate::manager::constraint::ConstraintError| e.to_string())?,
                env: specs::pairs("--env", &env)?,
                command,
                ..ServiceSpec::default()
            };
            let service = spec.name.clone();
            let applied = apply(api, Command::CreateService(spec))?;
            out.print(&applied, || applied.id.clone().unwrap_or_default());
            if !detach && out.format == Format::Table {
                converge(api, &service)?;
            }
        }
        ServiceCmd::Ls => {
            let state: State = fetch(api, "/v1/state")?;
            let rows: Vec<Vec<String>> = state
                .services
                .values()
                .map(|s| {
                    let tasks = state.tasks_of(&s.id);
                    let running = tasks
                        .iter()
                        .filter(|t| t.is_live() && t.observed == TaskState::Running)
                        .count();
                    let (mode, wanted) = match s.spec.mode {
                        ServiceMode::Replicated { replicas } => {
                            ("replicated", replicas.to_string())
                        }
                        ServiceMode::Global => (
                            "global",
                            tasks.iter().filter(|t| t.is_live()).count().to_string(),
                        ),
                    };
                    let ports: Vec<String> = s
                        .ports
                        .iter()
                        .map(|p| {
                            format!(
                                "*:{}->{}/{}",
                                p.published.unwrap_or(0),
                                p.target,
                                lower(&p.protocol)
                            )
                        })
                        .collect();
                    vec![
                        s.id.clone(),
                        s.spec.name.clone(),
                        mode.into(),
                        format!("{running}/{wanted}"),
                        ports.join(", "),
                    ]
                })
                .collect();
            out.print(&state.services, || {
                table(&["ID", "NAME", "MODE", "REPLICAS", "PORTS"], &rows)
            });
        }
        ServiceCmd::Inspect { service } => {
            let state: State = fetch(api, "/v1/state")?;
            let s = state.service(&service).map_err(|e| e.to_string())?;
            let vips: std::collections::BTreeMap<String, String> = s
                .vips
                .iter()
                .map(|(id, ip)| {
                    (
                        state
                            .networks
                            .get(id)
                            .map_or(id.clone(), |n| n.spec.name.clone()),
                        ip.to_string(),
                    )
                })
                .collect();
            let shown = serde_json::json!({ "id": s.id, "spec": s.spec, "vips": vips, "ports": s.ports, "version": s.version });
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).unwrap_or_default()
            );
        }
        ServiceCmd::Ps { service } => {
            let state: State = fetch(api, "/v1/state")?;
            let s = state.service(&service).map_err(|e| e.to_string())?;
            let tasks = state.tasks_of(&s.id);
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    let node = t
                        .node
                        .as_ref()
                        .and_then(|n| state.nodes.get(n))
                        .map_or(String::new(), |n| n.hostname.clone());
                    vec![
                        t.id.clone(),
                        t.name(&s.spec.name),
                        node,
                        lower(&t.desired),
                        lower(&t.observed),
                        t.message.clone(),
                    ]
                })
                .collect();
            out.print(&tasks, || {
                table(
                    &[
                        "ID",
                        "NAME",
                        "NODE",
                        "DESIRED STATE",
                        "CURRENT STATE",
                        "ERROR",
                    ],
                    &rows,
                )
            });
        }
        ServiceCmd::Scale { target, detach } => {
            let (service, replicas) = target
                .split_once('=')
                .and_then(|(s, n)| Some((s.to_owned(), n.parse().ok()?)))
                .ok_or_else(|| format!("{target:?}: write SERVICE=REPLICAS, e.g. web=5"))?;
            let applied = apply(
                api,
                Command::ScaleService {
                    service: service.clone(),
                    replicas,
                },
            )?;
            out.print(&applied, || format!("{service} scaled to {replicas}"));
            if !detach && out.format == Format::Table {
                converge(api, &service)?;
            }
        }
        ServiceCmd::Rm { service } => {
            let applied = apply(
                api,
                Command::RemoveService {
                    service: service.clone(),
                },
            )?;
            out.print(&applied, || service);
        }
    }
    Ok(())
}

/// A model enum as its lower-case serde name (what users type back).
fn lower<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// How long `service create` and `scale` follow the tasks before giving up (they say how to
/// look further).
const CONVERGE_WAIT: Duration = Duration::from_secs(60);

/// Follows a service's tasks until every wanted one runs, printing progress as Docker does.
#[allow(clippy::disallowed_methods)] // shell: waits on the wall clock
fn converge(api: &ApiClient, service: &str) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut last = None;
    loop {
        let state: State = fetch(api, "/v1/state")?;
        let s = state.service(service).map_err(|e| e.to_string())?;
        let live: Vec<_> = state
            .tasks_of(&s.id)
            .into_iter()
            .filter(|t| t.is_live())
            .collect();
        let running = live
            .iter()
            .filter(|t| t.observed == TaskState::Running)
            .count();
        if last != Some(running) {
            println!("overall progress: {running} out of {} tasks", live.len());
            last = Some(running);
        }
        if running == live.len() {
            println!("verify: Service converged");
            return Ok(());
        }
        if started.elapsed() > CONVERGE_WAIT {
            let why = live
                .iter()
                .find(|t| !t.message.is_empty())
                .map_or(String::new(), |t| format!(" ({})", t.message));
            return Err(format!(
                "service {service} has not converged after {CONVERGE_WAIT:?}{why}: see `shoal service ps {service}`; use -d not to wait"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
