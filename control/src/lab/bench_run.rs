//! `lab bench` carried out on a lab: the agents restarted with another `--algorithm` if asked,
//! the paths chosen (the published port on every node, the VIP from a task), the connections
//! driven, the table printed and the chart drawn.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use dataplane::shell::netns::NetnsRef;

use super::bench::{self, Distribution};
use super::host;
use super::plan::{Dir, Names, Record};
use super::summary::{hostnames, short_name};
use crate::manager::State;
use crate::manager::model::{Protocol, TaskState};

/// A path gives up after this, whatever is left of its connections.
const PATH_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct BenchArgs {
    pub lab: String,
    pub service: String,
    pub connections: u64,
    pub concurrency: u64,
    pub algorithm: Option<String>,
    pub png: Option<PathBuf>,
    pub json: bool,
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let dir = Dir::of(&args.lab);
    let mut record = dir.load()?;
    if let Some(algorithm) = &args.algorithm
        && record.algorithm.as_deref().unwrap_or("roundrobin") != algorithm
    {
        restart_agents(&dir, &mut record, algorithm)?;
    }
    let state: State = super::client(&dir, &record)?
        .get("/v1/state")
        .map_err(|e| e.to_string())?;
    let service = state
        .services
        .values()
        .find(|s| s.spec.name == args.service || short_name(&record, &s.spec.name) == args.service)
        .ok_or_else(|| format!("lab {} has no service {:?}", record.name, args.service))?;
    let stack = record.stack.as_deref();
    let running: Vec<_> = state
        .tasks
        .values()
        .filter(|t| t.desired == TaskState::Running && t.observed == TaskState::Running)
        .collect();
    // whoami answers with the task's full name; the table shows the matrix's labels.
    let labels: std::collections::BTreeMap<String, String> = running
        .iter()
        .filter(|t| t.service == service.id)
        .map(|t| {
            (
                t.name(&service.spec.name),
                super::matrix::task_label(&record, &state, t),
            )
        })
        .collect();
    let mut tasks: Vec<String> = labels.values().cloned().collect();
    tasks.sort();
    if tasks.is_empty() {
        return Err(format!("service {} has no running task", args.service));
    }
    let mut results: Vec<Distribution> = Vec::new();
    let n = args.connections;
    let c = args.concurrency;
    let port = service.ports.iter().find(|p| p.protocol == Protocol::Tcp);
    if let Some(published) = port.and_then(|p| p.published) {
        for node in record.nodes.iter().filter(|n| !n.cut) {
            let path = format!("{published}@{}", node.name);
            say(&format!("{path}: {n} connections from this host"));
            let dst = SocketAddr::from((node.addr, published));
            results.push(bench::drive(&path, dst, n, c, PATH_LIMIT, None));
        }
    }
    let target = port
        .map(|p| p.target)
        .or(service.spec.expose.first().copied())
        .unwrap_or(super::matrix::WHOAMI_PORT);
    if let Some((client, netns, vip)) = vip_client(&record, &state, service) {
        let path = format!("vip from {client}");
        say(&format!("{path}: {n} connections to {vip}:{target}"));
        let dst = SocketAddr::V4(SocketAddrV4::new(vip, target));
        let ns = NetnsRef::named(&netns);
        results.push(bench::drive(&path, dst, n, c, PATH_LIMIT, Some(&ns)));
    }
    for d in &mut results {
        d.per_task = std::mem::take(&mut d.per_task)
            .into_iter()
            .map(|(k, v)| {
                let label = labels
                    .get(&k)
                    .cloned()
                    .unwrap_or_else(|| bench::short_task(&k, stack));
                (label, v)
            })
            .collect();
    }
    let algorithm = record
        .algorithm
        .clone()
        .unwrap_or_else(|| "roundrobin".into());
    let report = serde_json::json!({
        "service": args.service, "algorithm": algorithm, "tasks": tasks, "paths": results
    });
    crate::cli::Out::new(args.json).print(&report, || {
        bench::render(&results, &tasks, &algorithm)
            .trim_end()
            .to_owned()
    });
    let png = args
        .png
        .clone()
        .unwrap_or_else(|| dir.0.join(format!("bench-{}.png", args.service)));
    draw(&dir, &results, &tasks, &args.service, &algorithm, &png);
    Ok(())
}

/// A running task of another service on one of `service`'s networks (else one of its own),
/// its sandbox, and the service's VIP there.
fn vip_client(
    record: &Record,
    state: &State,
    service: &crate::manager::model::Service,
) -> Option<(String, String, std::net::Ipv4Addr)> {
    let hosts = hostnames(state);
    let names = Names::new(&record.name);
    let mut candidates: Vec<_> = state
        .tasks
        .values()
        .filter(|t| t.desired == TaskState::Running && t.observed == TaskState::Running)
        .filter_map(|t| {
            let (network, vip) = service
                .vips
                .iter()
                .find(|(net, _)| t.addresses.contains_key(*net))?;
            let node = hosts.get(t.node.as_deref()?)?;
            let netns = crate::agent::node::sandbox_name(&names.node_netns(node), &t.id);
            let ingress = state.networks.get(network).is_some_and(|n| n.ingress);
            let label = super::matrix::task_label(record, state, t);
            // Prefer another service's task, and the service's own network over ingress.
            Some((
                (t.service == service.id, ingress, label.clone()),
                (label, netns, *vip),
            ))
        })
        .collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    candidates.into_iter().next().map(|(_, c)| c)
}

fn restart_agents(dir: &Dir, record: &mut Record, algorithm: &str) -> Result<(), String> {
    say(&format!(
        "restarting the agents with --algorithm {algorithm}"
    ));
    for node in &mut record.nodes {
        if let Some(pid) = node.agent_pid.take()
            && host::is_shoal(pid)
        {
            host::kill_and_wait(pid);
        }
    }
    dir.save(record)?;
    super::up::up(&super::up::UpArgs {
        name: record.name.clone(),
        nodes: record.nodes.len(),
        managers: 1,
        file: None,
        subnet: None,
        agent_flags: Vec::new(),
        algorithm: Some(algorithm.to_owned()),
        matrix: false,
        quiet: true,
    })?;
    *record = dir.load()?;
    Ok(())
}

/// The chart, with gnuplot if it is there; otherwise where its data and script are.
fn draw(
    dir: &Dir,
    results: &[Distribution],
    tasks: &[String],
    service: &str,
    algorithm: &str,
    png: &std::path::Path,
) {
    let title = format!("{service}: connections per task ({algorithm})");
    let (data, script) = bench::chart(results, tasks, &title, &png.display().to_string());
    let data_path = dir.0.join(format!("bench-{service}.dat"));
    let script_path = dir.0.join(format!("bench-{service}.gp"));
    if std::fs::write(&data_path, data).is_err() || std::fs::write(&script_path, script).is_err() {
        say(&format!(
            "could not write the chart's files in {}",
            dir.0.display()
        ));
        return;
    }
    let drawn = std::process::Command::new("gnuplot")
        .arg("-e")
        .arg(format!("DATA='{}'", data_path.display()))
        .arg(&script_path)
        .output();
    match drawn {
        Ok(out) if out.status.success() => say(&format!("chart: {}", png.display())),
        Ok(out) => say(&format!(
            "gnuplot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(_) => say(&format!(
            "no gnuplot (apt-get install gnuplot-nox): the chart's data and script are {} and {}",
            data_path.display(),
            script_path.display()
        )),
    }
}

fn say(line: &str) {
    eprintln!("{line}");
}
