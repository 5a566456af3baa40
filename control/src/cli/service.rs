//! `shoal service ...`, and following a service until it converges.

use std::time::Duration;

use super::args::{Format, ServiceCmd};
use super::render::table;
use super::{Out, apply, fetch, lower, specs};
use crate::manager::api::ApiClient;
use crate::manager::model::{EndpointMode, HealthCheck, ServiceMode, ServiceSpec, TaskState};
use crate::manager::{Command, State};

pub(super) fn service(api: &ApiClient, out: &Out, cmd: ServiceCmd) -> Result<(), String> {
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
            health_cmd,
            health_interval_ms,
            health_retries,
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
                health: health_cmd.map(|cmd| HealthCheck::Command {
                    command: vec!["sh".into(), "-c".into(), cmd],
                    interval_ms: health_interval_ms,
                    retries: health_retries,
                }),
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
        ServiceCmd::Update {
            service,
            replicas,
            env_add,
            env_rm,
            constraint_add,
            constraint_rm,
            publish_add,
            publish_rm,
            network_add,
            network_rm,
            detach,
        } => {
            let state: State = fetch(api, "/v1/state")?;
            let mut spec = state
                .service(&service)
                .map_err(|e| e.to_string())?
                .spec
                .clone();
            if let Some(replicas) = replicas {
                match spec.mode {
                    ServiceMode::Replicated { .. } => {
                        spec.mode = ServiceMode::Replicated { replicas }
                    }
                    ServiceMode::Global => {
                        return Err(format!(
                            "service {service}: --replicas does not go with a global service"
                        ));
                    }
                }
            }
            spec.env.extend(specs::pairs("--env-add", &env_add)?);
            env_rm.iter().for_each(|k| {
                spec.env.remove(k);
            });
            for c in &constraint_add {
                spec.constraints.push(
                    c.parse()
                        .map_err(|e: crate::manager::constraint::ConstraintError| e.to_string())?,
                );
            }
            spec.constraints
                .retain(|c| !constraint_rm.contains(&c.to_string()));
            for p in &publish_add {
                spec.ports.push(specs::publish(p)?);
            }
            spec.ports.retain(|p| !publish_rm.contains(&p.target));
            for n in &network_add {
                spec.networks.push(specs::network(n)?);
            }
            spec.networks.retain(|a| !network_rm.contains(&a.network));
            let applied = apply(
                api,
                Command::UpdateService {
                    service: service.clone(),
                    spec,
                },
            )?;
            out.print(&applied, || service.clone());
            if !detach && out.format == Format::Table {
                converge(api, &service)?;
            }
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
        ServiceCmd::Logs {
            service,
            tail,
            state_root,
        } => logs(api, &service, tail, &state_root)?,
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

/// How long `service create` and `scale` follow the tasks before giving up (they say how to
/// look further).
const CONVERGE_WAIT: Duration = Duration::from_secs(60);

/// Follows a service's tasks until every wanted one runs, printing progress as Docker does.
#[allow(clippy::disallowed_methods)] // shell: waits on the wall clock
pub(super) fn converge(api: &ApiClient, service: &str) -> Result<(), String> {
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

/// `service logs`: every task's log found under `state_root`, oldest task first.
fn logs(
    api: &ApiClient,
    service: &str,
    tail: Option<usize>,
    state_root: &std::path::Path,
) -> Result<(), String> {
    let state: State = fetch(api, "/v1/state")?;
    let s = state.service(service).map_err(|e| e.to_string())?;
    let mut elsewhere = Vec::new();
    for t in state.tasks_of(&s.id) {
        let node = t
            .node
            .as_ref()
            .and_then(|n| state.nodes.get(n))
            .map_or("", |n| n.hostname.as_str());
        let name = t.name(&s.spec.name);
        let path = state_root
            .join(node)
            .join("logs")
            .join(format!("{}.log", t.id));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                let from = tail.map_or(0, |n| lines.len().saturating_sub(n));
                for line in &lines[from..] {
                    println!("{name}@{node}    | {line}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !node.is_empty() && t.observed != TaskState::Pending {
                    elsewhere.push(format!("{name} on {node}"));
                }
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if !elsewhere.is_empty() {
        eprintln!(
            "not on this host (logs stay on their node: run `shoal service logs {service}` there): {}",
            elsewhere.join(", ")
        );
    }
    Ok(())
}
