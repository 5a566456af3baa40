//! `shoal lab`: a whole multi-node shoal cluster on one Linux host. An underlay namespace with
//! a bridge, a namespace per node plugged into it, a real manager and a real agent per node
//! (each process in its node's namespace, joined with tokens), a stack deployed; then the
//! questions testers ask — who reaches whom (`matrix`), what breaks when a node dies or is cut
//! off (`kill`, `cut`, `heal`) — and `down`, which leaves nothing behind.
//!
//! - [`plan`]: names, addresses and the lab's record (sans-IO);
//! - [`host`]: namespaces, links and processes on the host;
//! - [`up`], [`ls`] (and `down`), [`ops`] (`exec`, `attach`, `kill`, `cut`, `heal`);
//! - [`matrix`] (what is checked, compared and shown; sans-IO) and [`probe`] (the checks).

pub mod bench;
pub mod bench_run;
pub mod host;
pub mod ls;
pub mod matrix;
pub mod ops;
pub mod plan;
pub mod probe;
pub mod summary;
pub mod up;

use std::path::PathBuf;

use clap::Subcommand;

use crate::manager::State;
use crate::manager::api::ApiClient;
use plan::{Dir, Record};

/// The default lab's name.
pub const DEFAULT_LAB: &str = "shoal";

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Builds the lab (or completes it: missing nodes added, stopped daemons restarted) and
    /// deploys the stack.
    Up {
        /// A compose file; default: the seed stack (examples/seed/stack.yml).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 1)]
        managers: usize,
        #[arg(long, default_value = DEFAULT_LAB)]
        name: String,
        /// The underlay /24 (default: the first free one of 172.29.0.0/16).
        #[arg(long)]
        subnet: Option<ipnet::Ipv4Net>,
        /// Seconds a stopping task keeps its connections before SIGTERM (the agents'
        /// --drain).
        #[arg(long)]
        drain: Option<u64>,
        /// Skip the matrix after the summary.
        #[arg(long)]
        no_matrix: bool,
        /// The agents' VIP balancing algorithm.
        #[arg(long, value_enum)]
        algorithm: Option<crate::cli::agent::AlgorithmArg>,
    },
    /// Connection distribution: through the published port on every node and through the
    /// VIP from a task; per-task counts, max/mean, a bar chart (PNG).
    Bench {
        lab: String,
        service: String,
        /// Per path.
        #[arg(long, default_value_t = 1000)]
        connections: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: u64,
        /// Restart the agents with this algorithm first (if it is not theirs).
        #[arg(long, value_enum)]
        algorithm: Option<crate::cli::agent::AlgorithmArg>,
        /// Where the chart goes (default: the lab's folder, bench-SERVICE.png).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// The labs on this host.
    Ls,
    /// Removes a lab: every namespace, process, link and file it made. Idempotent.
    Down {
        #[arg(default_value = DEFAULT_LAB)]
        lab: String,
    },
    /// Runs a command in a node, a task (SERVICE.SLOT) or an attached container.
    Exec {
        lab: String,
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A standalone container (a namespace) attached to an attachable network.
    Attach {
        lab: String,
        #[arg(long)]
        network: String,
        name: String,
        /// The node whose agent attaches it.
        #[arg(long, default_value = "n1")]
        node: String,
    },
    /// Node loss: SIGKILLs a node's agent and tasks.
    Kill { lab: String, node: String },
    /// Partition: takes a node off the underlay (its processes go on).
    Cut { lab: String, node: String },
    /// Puts cut nodes back on the underlay (all, or the one named).
    Heal { lab: String, node: Option<String> },
    /// Who reaches whom: every task, container and the host against every service name, VIP,
    /// task address and published port.
    Matrix {
        #[arg(default_value = DEFAULT_LAB)]
        lab: String,
        /// An expected matrix (the JSON this command prints with --format json): differences
        /// are listed and the exit code is 1.
        #[arg(long)]
        expect: Option<PathBuf>,
    },
}

/// The `--algorithm` value the agents take.
fn algorithm_name(a: crate::cli::agent::AlgorithmArg) -> String {
    use clap::ValueEnum;
    a.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// The manager's client, with the lab's CLI credentials.
pub fn client(dir: &Dir, record: &Record) -> Result<ApiClient, String> {
    crate::cli::client(record.manager_addr()?, Some(&dir.certs()))
}

fn state_of(dir: &Dir, record: &Record) -> Result<State, String> {
    client(dir, record)?.get("/v1/state").map_err(|e| {
        format!(
            "lab {}: the manager does not answer ({e}); `shoal lab up --name {}` restarts it",
            record.name, record.name
        )
    })
}

fn open(lab: &str) -> Result<(Dir, Record), String> {
    plan::check_name(lab)?;
    let dir = Dir::of(lab);
    let record = dir.load()?;
    Ok((dir, record))
}

/// Runs a `shoal lab` command; `Ok(code)` is the process's exit code.
pub fn run(cmd: LabCmd, json: bool) -> Result<i32, String> {
    match cmd {
        LabCmd::Up {
            file,
            nodes,
            managers,
            name,
            subnet,
            drain,
            no_matrix,
            algorithm,
        } => {
            let agent_flags = drain
                .map(|d| vec!["--drain".to_owned(), d.to_string()])
                .unwrap_or_default();
            up::up(&up::UpArgs {
                name,
                nodes,
                managers,
                file,
                subnet,
                agent_flags,
                algorithm: algorithm.map(algorithm_name),
                matrix: !no_matrix,
                quiet: false,
            })?;
        }
        LabCmd::Ls => ls::ls(json)?,
        LabCmd::Bench {
            lab,
            service,
            connections,
            concurrency,
            algorithm,
            png,
        } => {
            plan::check_name(&lab)?;
            bench_run::run(&bench_run::BenchArgs {
                lab,
                service,
                connections,
                concurrency,
                algorithm: algorithm.map(algorithm_name),
                png,
                json,
            })?;
        }
        LabCmd::Down { lab } => ls::down_cmd(&lab)?,
        LabCmd::Exec {
            lab,
            target,
            command,
        } => {
            let (dir, record) = open(&lab)?;
            let state = state_of(&dir, &record)?;
            return ops::exec(&record, &state, &target, &command);
        }
        LabCmd::Attach {
            lab,
            network,
            name,
            node,
        } => {
            let (dir, mut record) = open(&lab)?;
            let state = state_of(&dir, &record)?;
            let said = ops::attach(&dir, &mut record, &state, &network, &name, &node)?;
            dir.save(&record)?;
            println!("{said}");
        }
        LabCmd::Kill { lab, node } => {
            let (dir, mut record) = open(&lab)?;
            let said = ops::kill(&mut record, &node)?;
            dir.save(&record)?;
            println!("{said}");
        }
        LabCmd::Cut { lab, node } => {
            let (dir, mut record) = open(&lab)?;
            let said = ops::set_cut(&mut record, Some(&node), true)?;
            dir.save(&record)?;
            println!("{said}");
        }
        LabCmd::Heal { lab, node } => {
            let (dir, mut record) = open(&lab)?;
            let said = ops::set_cut(&mut record, node.as_deref(), false)?;
            dir.save(&record)?;
            println!("{said}");
        }
        LabCmd::Matrix { lab, expect } => {
            let (dir, record) = open(&lab)?;
            let expected = match &expect {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Some(serde_json::from_str::<matrix::Matrix>(&text).map_err(|e| {
                        format!(
                            "{}: {e} (write the JSON `shoal lab matrix --format json` prints)",
                            path.display()
                        )
                    })?)
                }
                None => None,
            };
            let state = state_of(&dir, &record)?;
            let sources = matrix::sources(&record, &state);
            let destinations = matrix::destinations(&record, &state);
            let got = probe::run(&sources, &destinations);
            crate::cli::Out::new(json)
                .print(&got, || matrix::render(&sources, &destinations, &got));
            if let Some(expected) = expected {
                let diff = matrix::differences(&expected, &got);
                if !diff.is_empty() {
                    eprintln!(
                        "{} cells differ from {}:",
                        diff.len(),
                        expect
                            .as_deref()
                            .unwrap_or(std::path::Path::new(""))
                            .display()
                    );
                    for line in &diff {
                        eprintln!("  {line}");
                    }
                    return Ok(1);
                }
                eprintln!("the matrix is as expected");
            }
        }
    }
    Ok(0)
}
