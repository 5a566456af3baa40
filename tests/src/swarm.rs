//! A shoal cluster of real processes on the testbed: a manager (`shoal init`, `shoal
//! manager`) on the first node, an agent per node joined with the worker token, every node a
//! network namespace on one underlay. Everything goes through the `shoal` binary the test
//! names; the agents' task sandboxes carry the testbed's prefix, so the testbed removes them
//! too, also when the test fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use dataplane::shell::netns::NetnsRef;
use serde_json::Value;

use crate::testbed::{Node, Testbed, list_netns, wait_until};

/// The manager's API port.
pub const MANAGER_PORT: u16 = 2377;

/// A running cluster.
#[derive(Debug)]
pub struct Swarm {
    pub bed: Testbed,
    pub nodes: Vec<Node>,
    /// The `shoal` binary.
    shoal: String,
    dir: PathBuf,
    manager_pid: Option<u32>,
    /// Each node's agent pid (`None`: not running).
    agents: Vec<Option<u32>>,
    token: String,
    /// Extra flags every agent gets (`--drain 2`, ...).
    agent_flags: Vec<String>,
    node_down_after: u64,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // The testbed kills the processes and removes the namespaces; the state goes here.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Swarm {
    /// `n` nodes; the manager on the first, initialised and listening (a node silent for
    /// 10 s is down); no agent yet.
    pub fn new(test: &str, shoal: &str, n: usize, agent_flags: &[&str]) -> Swarm {
        Swarm::with_node_down_after(test, shoal, n, agent_flags, 10)
    }

    /// [`new`](Self::new) with the manager's `--node-down-after` in seconds.
    pub fn with_node_down_after(
        test: &str,
        shoal: &str,
        n: usize,
        agent_flags: &[&str],
        node_down_after: u64,
    ) -> Swarm {
        let mut bed = Testbed::new(test);
        let nodes: Vec<Node> = (0..n).map(|i| bed.add_node(&format!("n{i}"))).collect();
        let dir = std::env::temp_dir().join(format!("{}-swarm", bed.prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("swarm state dir");
        let mut swarm = Swarm {
            bed,
            nodes,
            shoal: shoal.to_owned(),
            dir,
            manager_pid: None,
            agents: vec![None; n],
            token: String::new(),
            agent_flags: agent_flags.iter().map(|s| s.to_string()).collect(),
            node_down_after,
        };
        let ip = swarm.manager_ip().to_string();
        let state = swarm.dir.join("manager.redb").display().to_string();
        let certs = swarm.certs();
        swarm.bed.exec_ok(
            &swarm.nodes[0].netns_name,
            &[
                shoal,
                "init",
                "--state",
                &state,
                "--advertise",
                &ip,
                "--certs-out",
                &certs,
            ],
        );
        swarm.start_manager();
        let out = swarm.cli_ok(&["join-token", "worker"]);
        swarm.token = out
            .split_whitespace()
            .skip_while(|w| *w != "--token")
            .nth(1)
            .unwrap_or_else(|| panic!("no token in {out:?}"))
            .to_owned();
        swarm
    }

    fn certs(&self) -> String {
        self.certs_dir().display().to_string()
    }

    /// The CLI's credentials (`shoal init --certs-out`).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("cli")
    }

    /// The agents' state folders' parent (`--state-dir` is `<root>/<hostname>`).
    pub fn state_root(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Node `i`'s agent's local API socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(&self.nodes[i].name).join("agent.sock")
    }

    /// Node `i`'s agent process, while it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents.get(i).copied().flatten()
    }

    pub fn manager_ip(&self) -> Ipv4Addr {
        self.nodes[0].underlay_ip
    }

    /// Starts (or restarts) the manager from its state.
    pub fn start_manager(&mut self) {
        let listen = SocketAddr::from((self.manager_ip(), MANAGER_PORT)).to_string();
        let state = self.dir.join("manager.redb").display().to_string();
        let ns = self.nodes[0].netns_name.clone();
        let down_after = self.node_down_after.to_string();
        let pid = self
            .bed
            .spawn(
                &ns,
                &[
                    &self.shoal,
                    "manager",
                    "--listen",
                    &listen,
                    "--state",
                    &state,
                    "--node-down-after",
                    &down_after,
                ],
            )
            .expect("start the manager");
        self.manager_pid = Some(pid);
        let up = wait_until(Duration::from_secs(20), || {
            self.cli(&["node", "ls"]).status.success()
        });
        assert!(up, "the manager did not answer:\n{}", self.logs());
    }

    /// SIGKILLs the manager.
    pub fn kill_manager(&mut self) {
        if let Some(pid) = self.manager_pid.take() {
            self.bed.kill(pid);
        }
    }

    /// Starts node `i`'s agent (the first time it joins with the token; later it comes back
    /// with its saved identity).
    pub fn start_agent(&mut self, i: usize) {
        let node = &self.nodes[i];
        let manager = SocketAddr::from((self.manager_ip(), MANAGER_PORT)).to_string();
        let addr = node.underlay_ip.to_string();
        let hostname = node.name.clone();
        let state = self.dir.join(&hostname).display().to_string();
        let prefix = format!("{}-{hostname}", self.bed.prefix());
        let socket = self.socket(i).display().to_string();
        let mut argv: Vec<String> = [
            &self.shoal,
            "agent",
            "--join",
            &manager,
            "--token",
            &self.token,
            "--hostname",
            &hostname,
            "--addr",
            &addr,
            "--state-dir",
            &state,
            "--netns-prefix",
            &prefix,
            "--socket",
            &socket,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(self.agent_flags.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let ns = node.netns_name.clone();
        let pid = self.bed.spawn_net(&ns, &argv).expect("start an agent");
        self.agents[i] = Some(pid);
    }

    /// Starts every agent and waits until the manager lists them all ready.
    pub fn start_agents(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_agent(i);
        }
        let n = self.nodes.len();
        let ready = wait_until(Duration::from_secs(30), || {
            // A map of node id to node.
            self.cli_json(&["node", "ls"])
                .as_object()
                .is_some_and(|nodes| {
                    nodes
                        .values()
                        .filter(|n| n["status"].as_str() == Some("ready"))
                        .count()
                        == n
                })
        });
        assert!(ready, "not every agent joined:\n{}", self.logs());
    }

    /// SIGKILLs node `i`'s agent (its tasks' processes live on, as after a crash).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(pid) = self.agents[i].take() {
            self.bed.kill(pid);
        }
    }

    /// Runs the CLI against the manager, from the manager's node.
    pub fn cli(&self, args: &[&str]) -> Output {
        let manager = SocketAddr::from((self.manager_ip(), MANAGER_PORT)).to_string();
        let certs = self.certs();
        let mut argv = vec![
            self.shoal.as_str(),
            "--manager",
            &manager,
            "--certs",
            &certs,
        ];
        argv.extend_from_slice(args);
        self.bed.exec(&self.nodes[0].netns_name, &argv)
    }

    /// [`cli`](Self::cli) that must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "shoal {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`cli_ok`](Self::cli_ok) with `--format json`, parsed (`Null` when it failed).
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut argv = vec!["--format", "json"];
        argv.extend_from_slice(args);
        let out = self.cli(&argv);
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The tasks of `service` (`service ps`, as JSON).
    pub fn tasks(&self, service: &str) -> Vec<Value> {
        self.cli_json(&["service", "ps", service])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The ids of `service`'s tasks that run (desired and observed).
    pub fn running(&self, service: &str) -> Vec<String> {
        self.tasks(service)
            .iter()
            .filter(|t| t["desired"] == "running" && t["observed"] == "running")
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until exactly `n` tasks of `service` run.
    pub fn wait_running(&self, service: &str, n: usize, within: Duration) -> Vec<String> {
        let ok = wait_until(within, || self.running(service).len() == n);
        assert!(
            ok,
            "{service}: {} tasks running, not {n}, after {within:?}: {:#?}\n{}",
            self.running(service).len(),
            self.tasks(service),
            self.logs()
        );
        self.running(service)
    }

    /// The hostname of the node running task `id` (from `service ps` and `node ls`).
    pub fn node_of(&self, service: &str, id: &str) -> Option<String> {
        let node_id = self.tasks(service).into_iter().find(|t| t["id"] == id)?["node"]
            .as_str()?
            .to_owned();
        self.cli_json(&["node", "ls"])[&node_id]["hostname"]
            .as_str()
            .map(str::to_owned)
    }

    /// The task namespaces that exist on node `hostname` (its agent's prefix; its ingress
    /// sandbox left out).
    pub fn sandboxes_on(&self, hostname: &str) -> Vec<String> {
        let prefix = format!("{}-{hostname}-", self.bed.prefix());
        list_netns()
            .into_iter()
            .filter(|n| n.starts_with(&prefix) && !n.ends_with("-ingress"))
            .collect()
    }

    /// The network namespace of task `id` (whichever node runs it), once it exists.
    pub fn task_netns(&self, id: &str) -> NetnsRef {
        let short = id.get(..12).unwrap_or(id);
        let mut found = None;
        wait_until(Duration::from_secs(10), || {
            found = list_netns()
                .into_iter()
                .find(|n| n.starts_with(self.bed.prefix()) && n.ends_with(&format!("-{short}")));
            found.is_some()
        });
        let name = found.unwrap_or_else(|| panic!("no namespace for task {id}"));
        NetnsRef::named(&name)
    }

    /// `dig @127.0.0.11 +short NAME` inside `ns`: the answers, sorted.
    pub fn dig(&self, ns: &NetnsRef, name: &str) -> Vec<String> {
        let ns_name = ns
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = self.bed.exec(
            &ns_name,
            &["dig", "@127.0.0.11", "+short", "+time=2", "+tries=1", name],
        );
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.starts_with(';'))
            .collect();
        lines.sort();
        lines
    }

    /// Every process's output so far, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let pids = self.manager_pid.iter().chain(self.agents.iter().flatten());
        for pid in pids {
            let log = self.bed.log_of(*pid).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("--- pid {pid}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}
