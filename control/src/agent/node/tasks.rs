//! A task's life on this node: its sandbox built, its process started, its endpoints
//! announced (peer and service tables); taken out of the balancer while unhealthy, restarted
//! per its policy; on stop, drained (out of the balancer, connections kept) for the drain
//! time, then ended (SIGTERM, SIGKILL) and removed everywhere.
//!
//! Start and stop of one task are serialised by its lifecycle lock: a stop that arrives
//! while the task is still starting waits for the start to finish, then undoes it.

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use dns::records::{EndpointMode as DnsMode, PortProtocol, PortRecord};

use crate::agent::peers::PeerRecord;
use crate::agent::runtime::{
    Health, HealthCheck, Restart, RestartHistory, RestartPolicy, TaskEvent, TaskSpec,
};
use crate::agent::services::ServiceEndpoint;
use crate::manager::model::{EndpointMode, Protocol, TaskState};
use crate::manager::view::{EndpointView, ServiceView};

use super::plan::Phase;
use super::sandbox::{Interface, Sandbox};
use super::{Shared, spawn_named};

/// A task this node holds.
pub(super) struct LocalTask {
    pub view: EndpointView,
    pub phase: Phase,
    pub sandbox: Option<Sandbox>,
    /// Whether it takes new clients (running and, with a health check, healthy).
    pub enabled: bool,
    pub history: RestartHistory,
    lifecycle: Arc<Mutex<()>>,
}

impl LocalTask {
    pub fn new(view: EndpointView) -> LocalTask {
        LocalTask {
            view,
            phase: Phase::Starting,
            sandbox: None,
            enabled: false,
            history: RestartHistory::default(),
            lifecycle: Arc::new(Mutex::new(())),
        }
    }
}

fn lifecycle(shared: &Shared, task: &str) -> Option<Arc<Mutex<()>>> {
    shared.local().tasks.get(task).map(|t| t.lifecycle.clone())
}

/// Builds the task's sandbox, starts its process and announces it. A failure is reported
/// to the manager with its cause and leaves nothing behind.
pub(super) fn start(shared: &Shared, task: &str) {
    let Some(lock) = lifecycle(shared, task) else {
        return;
    };
    let _serial = lock.lock().unwrap_or_else(|p| p.into_inner());
    let (view, service, interfaces) = {
        let local = shared.local();
        let Some(t) = local.tasks.get(task) else {
            return;
        };
        if t.phase != Phase::Starting {
            return;
        }
        let service = local.services.get(&t.view.service).cloned();
        let interfaces = interfaces(shared, &local, &t.view, service.as_ref());
        (t.view.clone(), service, interfaces)
    };
    let result = interfaces
        .and_then(|mut interfaces| {
            // With the egress bridge the default route goes there (as Docker's
            // docker_gwbridge), not to an overlay's gateway.
            let egress = shared
                .egress
                .as_ref()
                .filter(|_| interfaces.iter().any(|i| i.gateway.is_some()));
            if egress.is_some() {
                for i in &mut interfaces {
                    i.gateway = None;
                }
            }
            let name = super::sandbox_name(&shared.config.netns_prefix, &view.task);
            let mut sandbox = Sandbox::build(
                &shared.dataplane,
                &shared.dns,
                dataplane::shell::netns::NetnsRef::named(&name),
                Some(&name),
                format!("task-{}", view.task),
                interfaces,
            )
            .map_err(|e| format!("sandbox: {e}"))?;
            if let Some(egress) = egress {
                match egress.plug(&view.task, &sandbox.ns) {
                    Ok(ip) => sandbox.egress = Some(ip),
                    Err(e) => {
                        sandbox.remove(&shared.dataplane, &shared.dns);
                        return Err(format!("egress: {e}"));
                    }
                }
            }
            Ok(sandbox)
        })
        .and_then(|mut sandbox| {
            let spec = task_spec(shared, &view, service.as_ref(), &sandbox);
            match shared.runtime.start(spec) {
                Ok(_) => Ok(sandbox),
                Err(e) => {
                    remove_sandbox(shared, &mut sandbox);
                    Err(e.to_string())
                }
            }
        });
    let enabled = service.as_ref().is_none_or(|s| s.spec.health.is_none());
    let outcome = {
        let mut local = shared.local();
        let Some(t) = local.tasks.get_mut(task) else {
            return;
        };
        match result {
            Ok(sandbox) => {
                t.sandbox = Some(sandbox);
                t.enabled = enabled;
                // A stop that came meanwhile finds it running and takes it down after us.
                if t.phase == Phase::Starting {
                    t.phase = Phase::Running;
                }
                Ok(())
            }
            Err(message) => {
                t.phase = Phase::Ended(TaskState::Failed);
                Err(message)
            }
        }
    };
    match outcome {
        Ok(()) => {
            announce(shared, task);
            shared.report(task, TaskState::Running, String::new());
        }
        Err(message) => {
            tracing::warn!(task = view.name, "start failed: {message}");
            shared.report(task, TaskState::Failed, message);
        }
    }
}

/// Removes a task's sandbox and gives its egress address back.
fn remove_sandbox(shared: &Shared, sandbox: &mut Sandbox) {
    sandbox.remove(&shared.dataplane, &shared.dns);
    if let (Some(egress), Some(ip)) = (&shared.egress, sandbox.egress.take()) {
        egress.release(ip);
    }
}

/// Docker names a container's hostname and namespace after the first 12 characters of its id.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The task's interfaces, in the order of the service's networks (the first that is neither
/// internal nor the ingress network holds the default route), the ingress network last.
fn interfaces(
    shared: &Shared,
    local: &super::Local,
    view: &EndpointView,
    service: Option<&ServiceView>,
) -> Result<Vec<Interface>, String> {
    let rank = |id: &str| {
        let name = local.networks.get(id).map(|n| n.view.name.as_str());
        service
            .and_then(|s| {
                s.spec
                    .networks
                    .iter()
                    .position(|a| Some(a.network.as_str()) == name || a.network == id)
            })
            .unwrap_or(usize::MAX)
    };
    let mut ids: Vec<(&String, &std::net::Ipv4Addr)> = view.addresses.iter().collect();
    ids.sort_by_key(|(id, _)| rank(id));
    let mut gateway_given = false;
    ids.into_iter()
        .enumerate()
        .map(|(k, (id, ip))| {
            let net = local
                .networks
                .get(id)
                .ok_or_else(|| format!("network {id} is not in this node's view"))?;
            let vni = super::plan::vni_of(&net.view)
                .ok_or_else(|| format!("network {id}: VNI {} out of range", net.view.vni))?;
            let routed = !net.view.internal && !net.view.ingress && !gateway_given;
            gateway_given |= routed;
            let encrypted = net.view.keys.is_some();
            Ok(Interface {
                network: id.clone(),
                vni,
                endpoint: shared.endpoint_id(),
                name: format!("eth{k}"),
                ip: *ip,
                prefix_len: net.view.subnet.prefix_len(),
                mtu: shared.dataplane.overlay_mtu(encrypted),
                gateway: routed.then_some(net.view.gateway),
            })
        })
        .collect()
}

/// What the runtime runs: the service's command, or the probe server on its target ports.
fn task_spec(
    shared: &Shared,
    view: &EndpointView,
    service: Option<&ServiceView>,
    sandbox: &Sandbox,
) -> TaskSpec {
    let command = match service {
        Some(s) if !s.spec.command.is_empty() => s.spec.command.clone(),
        _ => {
            let mut c = vec![
                shared.config.program.display().to_string(),
                "whoami".to_owned(),
            ];
            let ports = service.map(|s| s.ports.as_slice()).unwrap_or_default();
            let exposed = service
                .map(|s| s.spec.expose.as_slice())
                .unwrap_or_default();
            let targets = ports
                .iter()
                .filter(|p| p.protocol == Protocol::Tcp)
                .map(|p| p.target)
                .chain(exposed.iter().copied());
            let mut seen = std::collections::BTreeSet::new();
            for port in targets.filter(|p| seen.insert(*p)) {
                c.extend(["--port".to_owned(), port.to_string()]);
            }
            c
        }
    };
    TaskSpec {
        id: view.task.clone(),
        name: view.name.clone(),
        service: service.map(|s| s.spec.name.clone()).unwrap_or_default(),
        node: shared.config.identity.hostname.clone(),
        hostname: short(&view.task).to_owned(),
        command,
        env: service.map(|s| s.spec.env.clone()).unwrap_or_default(),
        addresses: sandbox.interfaces.iter().map(|i| i.ip).collect(),
        netns: sandbox.ns.path(),
        log: shared
            .config
            .state_dir
            .join("logs")
            .join(format!("{}.log", view.task)),
        health: service
            .and_then(|s| s.spec.health.as_ref())
            .map(HealthCheck::from),
    }
}

/// Writes the task's peer and service entries as it stands (enabled or not).
fn announce(shared: &Shared, task: &str) {
    let entries = {
        let local = shared.local();
        let Some(t) = local.tasks.get(task) else {
            return;
        };
        let Some(sandbox) = &t.sandbox else { return };
        let service = local.services.get(&t.view.service);
        let mut entries = Vec::new();
        for i in &sandbox.interfaces {
            let record = PeerRecord {
                ip: i.ip,
                mac: i.mac().0,
                node: shared.overlay,
            };
            entries.push(PeerRecord::entry(&i.network, task, &record));
            if let Some(s) = service {
                let name = local.networks.get(&i.network).map(|n| n.view.name.clone());
                entries.push(service_entry(s, &t.view, i, name.as_deref(), t.enabled));
            }
        }
        entries
    };
    for (key, value) in entries {
        if let Err(e) = shared.gossip.write(key, Some(value)) {
            tracing::warn!(task, "gossip: {e}");
        }
    }
}

fn service_entry(
    s: &ServiceView,
    view: &EndpointView,
    i: &Interface,
    network_name: Option<&str>,
    enabled: bool,
) -> (crate::gossip::tables::Key, Vec<u8>) {
    let aliases = s
        .spec
        .networks
        .iter()
        .filter(|a| Some(a.network.as_str()) == network_name || a.network == i.network)
        .flat_map(|a| a.aliases.iter().cloned())
        .collect();
    let endpoint = ServiceEndpoint {
        service_id: s.id.clone(),
        service_name: s.spec.name.clone(),
        mode: match s.endpoint_mode {
            EndpointMode::Vip => DnsMode::Vip,
            EndpointMode::Dnsrr => DnsMode::Dnsrr,
        },
        vip: s.vips.get(&i.network).copied(),
        aliases,
        ports: s
            .ports
            .iter()
            .map(|p| PortRecord {
                protocol: match p.protocol {
                    Protocol::Tcp => PortProtocol::Tcp,
                    Protocol::Udp => PortProtocol::Udp,
                },
                target: p.target,
                published: p.published,
            })
            .collect(),
        task_name: view.name.clone(),
        ip: i.ip,
        enabled,
    };
    endpoint.entry(&i.network, &view.task)
}

/// Deletes the task's entries (tombstones: every node drops its route and backend).
fn withdraw(shared: &Shared, task: &str, sandbox: &Sandbox) {
    for i in &sandbox.interfaces {
        for table in [
            crate::agent::peers::PEER_TABLE,
            crate::agent::services::SERVICE_TABLE,
        ] {
            let key = crate::gossip::tables::Key {
                network: i.network.clone(),
                table: table.to_owned(),
                key: task.to_owned(),
            };
            let _ = shared.gossip.write(key, None);
        }
    }
}

/// Stops a task: out of the balancer (draining) at once, its process ended after the drain
/// and stop graces, then its entries, interfaces and namespace removed.
pub(super) fn stop(shared: &Shared, task: &str) {
    let Some(lock) = lifecycle(shared, task) else {
        return;
    };
    let _serial = lock.lock().unwrap_or_else(|p| p.into_inner());
    let had_process = {
        let mut local = shared.local();
        let Some(t) = local.tasks.get_mut(task) else {
            return;
        };
        if matches!(t.phase, Phase::Ended(_)) && t.sandbox.is_none() {
            return;
        }
        t.phase = Phase::Stopping;
        t.enabled = false;
        t.sandbox.is_some()
    };
    if had_process {
        announce(shared, task);
        let config = &shared.config;
        if let Err(e) = shared.runtime.stop(task, config.drain, config.stop_timeout) {
            tracing::debug!(task, "stop: {e}");
        }
    }
    teardown(shared, task, TaskState::Shutdown);
    shared.report(task, TaskState::Shutdown, String::new());
}

/// Removes what a task holds and records how it ended.
fn teardown(shared: &Shared, task: &str, ended: TaskState) {
    let sandbox = {
        let mut local = shared.local();
        let Some(t) = local.tasks.get_mut(task) else {
            return;
        };
        t.phase = Phase::Ended(ended);
        t.enabled = false;
        t.sandbox.take()
    };
    if let Some(mut sandbox) = sandbox {
        withdraw(shared, task, &sandbox);
        remove_sandbox(shared, &mut sandbox);
    }
}

/// Exits and health changes of tasks, until the runtime goes.
pub(super) fn watch_runtime(shared: &Arc<Shared>, events: Receiver<TaskEvent>) {
    for event in events {
        match event {
            TaskEvent::Health { task, health, .. } => on_health(shared, &task, health),
            TaskEvent::Exited { task, exit } => on_exit(shared, &task, exit),
        }
    }
}

fn on_health(shared: &Shared, task: &str, health: Health) {
    let changed = {
        let mut local = shared.local();
        let Some(t) = local.tasks.get_mut(task) else {
            return;
        };
        let enabled = health == Health::Healthy && t.phase == Phase::Running;
        let changed = t.enabled != enabled;
        t.enabled = enabled;
        changed
    };
    if changed {
        tracing::info!(task, %health, "health changed");
        announce(shared, task);
    }
}

/// A process ended on its own: out of the balancer, then restarted per the policy or
/// torn down and reported.
fn on_exit(shared: &Arc<Shared>, task: &str, exit: crate::agent::runtime::TaskExit) {
    let decision = {
        let mut local = shared.local();
        let services: &BTreeMap<String, ServiceView> = &local.services;
        let policy: RestartPolicy = local
            .tasks
            .get(task)
            .and_then(|t| services.get(&t.view.service))
            .map(|s| s.spec.restart.into())
            .unwrap_or_default();
        let Some(t) = local.tasks.get_mut(task) else {
            return;
        };
        if t.phase != Phase::Running {
            // Being stopped: the stop carries on.
            return;
        }
        let decision = policy.decide(&t.history, &exit, shared.runtime.now());
        t.enabled = false;
        if matches!(decision, Restart::After(_)) {
            t.history.record(exit.at);
        }
        decision
    };
    announce(shared, task);
    match decision {
        Restart::After(delay) => {
            let shared = shared.clone();
            let task = task.to_owned();
            spawn_named("task-restart", move || {
                std::thread::sleep(delay);
                restart(&shared, &task);
            });
        }
        Restart::No => {
            let ended = if exit.kind.is_failure() {
                TaskState::Failed
            } else {
                TaskState::Complete
            };
            teardown(shared, task, ended);
            shared.report(task, ended, exit.kind.to_string());
        }
    }
}

/// Starts an ended process again in its sandbox (unless the task was stopped meanwhile).
fn restart(shared: &Shared, task: &str) {
    let Some(lock) = lifecycle(shared, task) else {
        return;
    };
    let _serial = lock.lock().unwrap_or_else(|p| p.into_inner());
    let spec = {
        let local = shared.local();
        let Some(t) = local.tasks.get(task) else {
            return;
        };
        let Some(sandbox) = t.sandbox.as_ref().filter(|_| t.phase == Phase::Running) else {
            return;
        };
        let service = local.services.get(&t.view.service);
        task_spec(shared, &t.view, service, sandbox)
    };
    let health = spec.health.is_none();
    match shared.runtime.start(spec) {
        Ok(_) => {
            if let Some(t) = shared.local().tasks.get_mut(task) {
                t.enabled = health;
            }
            announce(shared, task);
        }
        Err(e) => {
            teardown(shared, task, TaskState::Failed);
            shared.report(task, TaskState::Failed, e.to_string());
        }
    }
}

/// Removes the task namespaces a previous agent of this node left (it was killed), with
/// the processes still in them: the manager's view starts the tasks again, fresh.
pub(super) fn sweep_leftovers(prefix: &str) {
    let Ok(dir) = std::fs::read_dir(dataplane::shell::netns::NETNS_RUN_DIR) else {
        return;
    };
    let mine = format!("{prefix}-");
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&mine) {
            continue;
        }
        kill_processes_in(&entry.path());
        if let Err(e) = dataplane::shell::netns::delete_named(&name) {
            tracing::warn!("leftover namespace {name}: {e}");
        } else {
            tracing::info!("removed leftover namespace {name}");
        }
    }
}

/// SIGKILLs every process whose network namespace is the one at `path`.
fn kill_processes_in(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(path) else {
        return;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(p.path().join("ns/net")) else {
            continue;
        };
        if ns.ino() == target.ino() && ns.dev() == target.dev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
