#![allow(clippy::unwrap_used)]
//! The manager process and the `shoal` command line, end to end on loopback: a real
//! `shoal manager`, real `shoal` commands, a restart.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use control::manager::State;
use control::manager::api::ApiClient;
use control::manager::view::NodeView;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// A `shoal manager` on 127.0.0.1:<free port>; killed on drop, also when the test fails.
struct ManagerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ManagerProcess {
    /// A manager without TLS (`--insecure`), as the tests of the commands use.
    fn start(state: &Path) -> ManagerProcess {
        Self::start_with(state, &["--insecure"])
    }

    fn start_with(state: &Path, extra: &[&str]) -> ManagerProcess {
        Self::start_at(state, "127.0.0.1:0", extra)
    }

    /// At a given address (a restart where the agents expect it).
    fn start_at(state: &Path, listen: &str, extra: &[&str]) -> ManagerProcess {
        let mut child = Command::new(SHOAL)
            .args(["manager", "--listen", listen, "--state"])
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        ManagerProcess { child, addr }
    }

    /// Runs `shoal --manager ADDR <args>`: (success, stdout, stderr).
    fn shoal(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(SHOAL)
            .arg("--manager")
            .arg(self.addr.to_string())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.shoal(args);
        assert!(ok, "shoal {args:?} failed: {err}");
        out
    }

    fn refused(&self, args: &[&str]) -> String {
        let (ok, _, err) = self.shoal(args);
        assert!(!ok, "shoal {args:?} should have been refused");
        err
    }

    fn state(&self) -> State {
        ApiClient::new(self.addr).get("/v1/state").unwrap()
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shoal-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn live_on(state: &State, service: &str) -> Vec<String> {
    let s = state.service(service).unwrap();
    let mut hosts: Vec<String> = state
        .tasks_of(&s.id)
        .into_iter()
        .filter(|t| t.is_live())
        .map(|t| {
            t.node
                .as_ref()
                .map_or("-".into(), |n| state.nodes[n].hostname.clone())
        })
        .collect();
    hosts.sort();
    hosts
}

#[test]
fn networks_services_scaling_drain_constraints_stacks_and_a_restart() {
    let dir = TempDir::new("e2e");
    let path = dir.0.join("manager.redb");
    let m = ManagerProcess::start(&path);
    for (i, host) in ["n1", "n2", "n3"].iter().enumerate() {
        let addr = format!("192.168.77.{}", i + 1);
        let mut args = vec!["node", "add", host, "--hostname", host, "--addr", &addr];
        if *host == "n3" {
            args.extend(["--label", "zone=east"]);
        }
        m.ok(&args);
    }
    m.ok(&["network", "create", "--driver", "overlay", "public"]);
    m.ok(&[
        "network",
        "create",
        "--opt",
        "encrypted",
        "--attachable",
        "secret",
    ]);
    m.ok(&[
        "service",
        "create",
        "-d",
        "web",
        "--replicas",
        "3",
        "--network",
        "public",
        "--publish",
        "8080:80",
    ]);
    let ls = m.ok(&["service", "ls"]);
    assert!(
        ls.contains("web")
            && ls.contains("replicated")
            && ls.contains("0/3")
            && ls.contains("*:8080->80/tcp"),
        "{ls}"
    );
    let ps = m.ok(&["service", "ps", "web"]);
    for host in ["n1", "n2", "n3"] {
        assert!(ps.contains(host), "{ps}");
    }
    assert_eq!(live_on(&m.state(), "web"), ["n1", "n2", "n3"]);

    m.ok(&["service", "scale", "-d", "web=5"]);
    assert_eq!(live_on(&m.state(), "web").len(), 5);
    m.ok(&["node", "update", "n1", "--availability", "drain"]);
    assert!(
        !live_on(&m.state(), "web").contains(&"n1".to_string()),
        "drained: its tasks moved"
    );
    m.ok(&[
        "service",
        "create",
        "-d",
        "east",
        "--replicas",
        "2",
        "--constraint",
        "node.labels.zone==east",
    ]);
    assert_eq!(live_on(&m.state(), "east"), ["n3", "n3"]);
    m.ok(&["service", "create", "-d", "agent", "--mode", "global"]);
    assert_eq!(
        live_on(&m.state(), "agent"),
        ["n2", "n3"],
        "global: every node that takes tasks"
    );

    // Refusals reach the user, with the fix.
    assert!(
        m.refused(&["service", "create", "web"])
            .contains("already exists")
    );
    let err = m.refused(&[
        "service",
        "create",
        "-d",
        "rr",
        "--endpoint-mode",
        "dnsrr",
        "--publish",
        "80:80",
    ]);
    assert!(err.contains("mode=host"), "{err}");
    assert!(
        m.refused(&["network", "create", "--driver", "bridge", "b"])
            .contains("--driver overlay")
    );
    assert!(
        m.refused(&["service", "create", "x", "--constraint", "node.color==red"])
            .contains("node.hostname==NAME")
    );

    // The seed stack.
    let seed = dir.0.join("seed.yml");
    std::fs::write(&seed, "version: '3.7'\nnetworks:\n  public: { driver: overlay, driver_opts: { encrypted: 'true' } }\n  private: { driver: overlay, driver_opts: { encrypted: 'true' }, attachable: true }\nservices:\n  postgres:\n    image: postgres:9.6.6\n    networks: [private]\n    deploy: { replicas: 1 }\n  api:\n    image: example/api\n    networks: [public, private]\n    ports: ['8080:80']\n    deploy: { replicas: 2, restart_policy: { condition: on-failure, max_attempts: 10, delay: 5s } }\n  echo:\n    image: example/echo\n    ports: ['8000:8000']\n").unwrap();
    // web already publishes 8080: the stack's api cannot, and says so.
    let err = m.refused(&["stack", "deploy", "-c", seed.to_str().unwrap(), "seed"]);
    assert!(err.contains("8080") && err.contains("seed_api"), "{err}");
    m.ok(&["service", "rm", "web"]);
    m.ok(&["stack", "deploy", "-c", seed.to_str().unwrap(), "seed"]);
    let state = m.state();
    let api = state.service("seed_api").unwrap();
    assert_eq!(api.vips.len(), 3, "public, private and ingress");
    let networks = m.ok(&["network", "ls"]);
    assert!(
        networks.contains("seed_public") && networks.contains("attachable,encrypted"),
        "{networks}"
    );
    let bad = dir.0.join("bad.yml");
    std::fs::write(&bad, "services:\n  web:\n    imagee: x\n").unwrap();
    let err = m.refused(&["stack", "deploy", "-c", bad.to_str().unwrap(), "bad"]);
    assert!(
        err.contains("bad.yml:3:") && err.contains("imagee"),
        "{err}"
    );

    // Inspect names the VIPs by network.
    let inspect = m.ok(&["service", "inspect", "seed_api"]);
    for network in ["seed_public", "seed_private", "ingress"] {
        assert!(inspect.contains(&format!("\"{network}\"")), "{inspect}");
    }
    // Encrypted networks got their first key at creation; rotation on demand adds the next.
    let epochs = |m: &ManagerProcess| {
        let state = m.state();
        let id = state.network("secret").unwrap().id.clone();
        state.keys.get(&id).map_or(0, |k| k.epochs.len())
    };
    assert_eq!(epochs(&m), 1);
    m.ok(&["network", "rotate-key", "secret"]);
    assert_eq!(epochs(&m), 2);
    assert!(
        m.refused(&["network", "rotate-key", "public"])
            .contains("not encrypted")
    );
    // A node's view: its tasks and networks, the keys of the encrypted ones it is on.
    let state = m.state();
    let n3 = state.node("n3").unwrap().id.clone();
    let view: NodeView = ApiClient::new(m.addr)
        .get(&format!("/v1/nodes/{n3}/view?after=0"))
        .unwrap();
    assert!(!view.tasks.is_empty() && view.revision == state.revision);

    // Restart: everything is still there, revisions go on.
    let revision = state.revision;
    drop(m);
    let m = ManagerProcess::start(&path);
    let state = m.state();
    assert_eq!(state.revision, revision);
    assert!(m.ok(&["service", "ls"]).contains("seed_api"));
    m.ok(&["service", "scale", "-d", "seed_api=3"]);
    assert_eq!(m.state().revision, revision + 1);
}

#[test]
fn a_manager_that_is_not_there_is_named_in_the_error() {
    let out = Command::new(SHOAL)
        .args(["--manager", "127.0.0.1:9", "service", "ls"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("127.0.0.1:9") && err.contains("shoal manager"),
        "{err}"
    );
}

/// A `shoal agent --no-runtime` process; killed on drop.
struct AgentProcess(Child);

impl AgentProcess {
    fn start(manager: SocketAddr, host: &str, addr: &str) -> AgentProcess {
        let child = Command::new(SHOAL)
            .args([
                "--manager",
                &manager.to_string(),
                "agent",
                "--no-runtime",
                "--id",
                &format!("id-{host}"),
                "--hostname",
                host,
                "--addr",
                addr,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        AgentProcess(child)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` every 100 ms for up to `secs` seconds.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn agents_follow_the_stream_services_converge_and_a_silent_node_loses_its_tasks() {
    let dir = TempDir::new("agents");
    let m = ManagerProcess::start_with(
        &dir.0.join("manager.redb"),
        &["--insecure", "--node-down-after", "2"],
    );
    let mut agents: Vec<Option<AgentProcess>> = ["n1", "n2", "n3"]
        .iter()
        .enumerate()
        .map(|(i, host)| {
            Some(AgentProcess::start(
                m.addr,
                host,
                &format!("192.168.77.{}", i + 1),
            ))
        })
        .collect();
    assert!(
        eventually(10, || m.state().nodes.len() == 3),
        "the agents registered"
    );
    m.ok(&["network", "create", "public"]);
    let out = m.ok(&[
        "service",
        "create",
        "web",
        "--replicas",
        "3",
        "--network",
        "public",
    ]);
    assert!(
        out.contains("overall progress: 3 out of 3 tasks")
            && out.contains("verify: Service converged"),
        "{out}"
    );
    assert!(m.ok(&["service", "ls"]).contains("3/3"));
    let out = m.ok(&["service", "scale", "web=6"]);
    assert!(out.contains("verify: Service converged"), "{out}");

    // n2's agent dies: after the grace its node is down and its tasks run elsewhere.
    agents[1] = None;
    assert!(
        eventually(15, || m
            .ok(&["node", "ls"])
            .lines()
            .any(|l| l.contains("n2") && l.contains("down"))),
        "n2 marked down"
    );
    assert!(eventually(10, || {
        let state = m.state();
        let on = live_on(&state, "web");
        on.len() == 6 && !on.contains(&"n2".to_string())
    }));
    // It comes back: ready again (its tasks stay where they went, as in Docker).
    agents[1] = Some(AgentProcess::start(m.addr, "n2", "192.168.77.2"));
    assert!(eventually(15, || m
        .ok(&["node", "ls"])
        .lines()
        .any(|l| l.contains("n2") && l.contains("ready"))));
    let global = m.ok(&["service", "create", "mon", "--mode", "global"]);
    assert!(
        global.contains("overall progress: 3 out of 3 tasks"),
        "{global}"
    );

    // An encrypted network's first key becomes the sending key once every node on it said
    // it holds it (the agents acknowledge what their views carry).
    m.ok(&["network", "create", "--opt", "encrypted", "secret"]);
    m.ok(&[
        "service",
        "create",
        "vault",
        "--replicas",
        "2",
        "--network",
        "secret",
    ]);
    let tx = |m: &ManagerProcess| {
        let state = m.state();
        let id = state.network("secret").unwrap().id.clone();
        state.keys.get(&id).and_then(|k| k.tx)
    };
    assert!(
        eventually(10, || tx(&m) == Some(1)),
        "key 1 in use once acknowledged"
    );

    // The manager restarts where it was: the agents' streams resume (from the revision
    // they had) and a new service converges on them.
    let addr = m.addr.to_string();
    let state_file = dir.0.join("manager.redb");
    drop(m);
    let m = ManagerProcess::start_at(
        &state_file,
        &addr,
        &["--insecure", "--node-down-after", "2"],
    );
    let out = m.ok(&["service", "create", "after", "--replicas", "3"]);
    assert!(out.contains("verify: Service converged"), "{out}");
}

#[test]
fn init_tls_tokens_and_a_joining_agent() {
    let dir = TempDir::new("tls");
    let state = dir.0.join("manager.redb");
    let certs = dir.0.join("cli");
    let out = Command::new(SHOAL)
        .args([
            "init",
            "--advertise",
            "127.0.0.1",
            "--default-addr-pool",
            "10.20.0.0/16",
            "--default-addr-pool-mask-length",
            "26",
            "--state",
        ])
        .arg(&state)
        .arg("--certs-out")
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = said
        .split_whitespace()
        .find(|w| w.starts_with("SHTKN-1-"))
        .unwrap()
        .to_owned();
    // A second init of the same store is refused.
    let again = Command::new(SHOAL)
        .args(["init", "--state"])
        .arg(&state)
        .arg("--certs-out")
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already holds a cluster")
    );

    let m = ManagerProcess::start_with(&state, &["--node-down-after", "2"]);
    let with_certs = |args: &[&str]| {
        let out = Command::new(SHOAL)
            .arg("--manager")
            .arg(m.addr.to_string())
            .arg("--certs")
            .arg(&certs)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = with_certs(&["network", "create", "public"]);
    assert!(ok, "{err}");
    // Without a client certificate nothing but join works.
    let ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let anonymous = ApiClient::with_tls(
        m.addr,
        control::manager::trust::client_config(&ca, None).unwrap(),
    );
    let err = anonymous.get::<State>("/v1/state").unwrap_err().to_string();
    assert!(err.contains("needs a client certificate"), "{err}");
    // Plain HTTP to the TLS port gets nowhere either, and is told why.
    let (ok, _, err) = m.shoal(&["service", "ls"]);
    assert!(!ok && err.contains("--certs"), "{err}");

    // An agent joins with the worker token; a wrong or rotated-out token is refused.
    let agent = |token: &str| {
        Command::new(SHOAL)
            .args([
                "--manager",
                &m.addr.to_string(),
                "agent",
                "--no-runtime",
                "--token",
                token,
                "--hostname",
                "w1",
                "--addr",
                "192.168.77.11",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let joined = AgentProcess(agent(&token));
    // Two more join with `shoal join`, one of them labelled through `agent --label`.
    let join = |host: &str, addr: &str, label: Option<&str>| {
        let mut args = vec!["--manager".to_string(), m.addr.to_string()];
        match label {
            None => args.extend(["join", "--no-runtime"].map(String::from)),
            Some(l) => args.extend(["agent", "--no-runtime", "--label", l].map(String::from)),
        }
        args.extend(["--token", &token, "--hostname", host, "--addr", addr].map(String::from));
        AgentProcess(
            Command::new(SHOAL)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _w2 = join("w2", "192.168.77.12", None);
    let _w3 = join("w3", "192.168.77.13", Some("zone=east"));
    let node_ls = || with_certs(&["node", "ls"]).1;
    assert!(
        eventually(10, || ["w1", "w2", "w3"]
            .iter()
            .all(|w| node_ls().contains(w))),
        "{}",
        node_ls()
    );
    let hosts = |service: &str| {
        let ps = with_certs(&["service", "ps", service]).1;
        // Columns: ID, NAME, NODE, DESIRED STATE, CURRENT STATE: the tasks meant to run.
        let mut on: Vec<String> = ps
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| cols.get(3) == Some(&"running"))
            .filter_map(|cols| cols.get(2).map(|h| h.to_string()))
            .collect();
        on.sort();
        on
    };
    let converged = |args: &[&str]| {
        let (ok, out, err) = with_certs(args);
        assert!(
            ok && out.contains("verify: Service converged"),
            "{args:?}: {out}{err}"
        );
    };
    // The whole scenario over mTLS: services, scale up and down, drain, constraints, global.
    converged(&[
        "service",
        "create",
        "web",
        "--replicas",
        "3",
        "--network",
        "public",
    ]);
    assert_eq!(
        hosts("web"),
        ["w1", "w2", "w3"],
        "spread over the three nodes"
    );
    converged(&["service", "scale", "web=6"]);
    assert_eq!(hosts("web").len(), 6);
    converged(&["service", "scale", "web=2"]);
    assert_eq!(hosts("web").len(), 2);
    let (ok, _, err) = with_certs(&["node", "update", "w1", "--availability", "drain"]);
    assert!(ok, "{err}");
    converged(&["service", "scale", "web=4"]);
    assert!(
        !hosts("web").contains(&"w1".to_string()),
        "w1 drains: {:?}",
        hosts("web")
    );
    converged(&[
        "service",
        "create",
        "east",
        "--replicas",
        "2",
        "--constraint",
        "node.labels.zone==east",
    ]);
    assert_eq!(hosts("east"), ["w3", "w3"]);
    converged(&["service", "create", "mon", "--mode", "global"]);
    assert_eq!(hosts("mon"), ["w2", "w3"], "one per node that takes tasks");
    // The pool given at init, and the gossip keyring acknowledged by the joined node.
    let state = with_certs(&["--format", "json", "network", "ls"]).1;
    assert!(state.contains("10.20.0.64/26"), "{state}");
    let gossip_tx = || {
        let client = ApiClient::with_tls(
            m.addr,
            control::manager::trust::client_config(
                &ca,
                Some((
                    &std::fs::read_to_string(certs.join("cli.pem")).unwrap(),
                    &std::fs::read_to_string(certs.join("cli.key")).unwrap(),
                )),
            )
            .unwrap(),
        );
        client.get::<State>("/v1/state").unwrap().gossip_keys.tx
    };
    assert!(
        eventually(10, || gossip_tx() == Some(1)),
        "the gossip key in use once every node holds it"
    );
    let (ok, out, _) = with_certs(&["join-token", "worker", "--rotate"]);
    assert!(ok && !out.contains(&token), "{out}");
    let refused = agent(&token).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("rotated out"),
        "{err}"
    );
    let other = format!("SHTKN-1-{}-{}", "ab".repeat(32), "x".repeat(25));
    let refused = agent(&other).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("another cluster"),
        "{err}"
    );
    drop(joined);
}

#[test]
fn inspect_promote_update_and_the_stack_commands() {
    let dir = TempDir::new("more");
    let m = ManagerProcess::start(&dir.0.join("manager.redb"));
    m.ok(&[
        "node",
        "add",
        "n1",
        "--hostname",
        "n1",
        "--addr",
        "192.168.77.1",
    ]);
    m.ok(&[
        "node",
        "add",
        "n2",
        "--hostname",
        "n2",
        "--addr",
        "192.168.77.2",
    ]);
    m.ok(&["node", "promote", "n2"]);
    assert!(
        m.ok(&["node", "inspect", "n2"])
            .contains("\"role\": \"manager\"")
    );
    m.ok(&["node", "demote", "n2"]);
    assert!(
        m.ok(&["node", "inspect", "n2"])
            .contains("\"role\": \"worker\"")
    );

    let stack = dir.0.join("app.yml");
    std::fs::write(
        &stack,
        "services:\n  web:\n    ports: ['8080:80']\n  db:\n    deploy: { replicas: 2 }\n",
    )
    .unwrap();
    m.ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "app"]);
    let ls = m.ok(&["stack", "ls"]);
    assert!(ls.contains("app") && ls.contains('2'), "{ls}");
    let services = m.ok(&["stack", "services", "app"]);
    assert!(
        services.contains("app_web") && services.contains("app_db"),
        "{services}"
    );
    assert_eq!(
        m.ok(&["stack", "ps", "app"]).lines().count(),
        1 + 3,
        "a header and three tasks"
    );
    let inspect = m.ok(&["network", "inspect", "app_default"]);
    assert!(
        inspect.contains("app_web") && inspect.contains("\"vni\""),
        "{inspect}"
    );

    // Update: a new environment and scale; the tasks are replaced, the port kept.
    let before = m.state();
    let web = before.service("app_web").unwrap().clone();
    m.ok(&[
        "service",
        "update",
        "-d",
        "app_web",
        "--env-add",
        "MODE=blue",
        "--replicas",
        "2",
    ]);
    let after = m.state();
    let updated = after.service("app_web").unwrap();
    assert_eq!(
        updated.spec.env.get("MODE").map(String::as_str),
        Some("blue")
    );
    assert_eq!(updated.ports[0].published, Some(8080));
    assert_eq!(updated.version, web.version + 1);
    assert!(
        m.refused(&[
            "service",
            "update",
            "-d",
            "app_web",
            "--constraint-add",
            "node.zone==x"
        ])
        .contains("node.hostname==NAME")
    );

    m.ok(&["stack", "rm", "app"]);
    let state = m.state();
    assert!(state.services.is_empty() && state.network("app_default").is_err());
    assert!(m.refused(&["stack", "rm", "app"]).contains("not found"));
}
