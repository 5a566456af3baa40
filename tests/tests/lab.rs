//! Issue 8's acceptance, through the `shoal` binary: `shoal lab` builds a multi-node cluster
//! on this host, deploys the example stacks, answers who reaches whom, and leaves nothing
//! behind. Needs root. Each test's lab is named `st<pid>_<n>` (the testbed's prefix form, so a
//! crashed run's namespaces are swept by the next) and has its own underlay /24.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dataplane::shell::netns::NetnsRef;
use serde_json::Value;
use tests::testbed::{base36, list_netns, sweep_leftovers};
use tests::traffic::whoami_task;
use tests::wait_until;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal-under-test");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A lab for one test; `lab down` when dropped, also on a failed assertion.
struct Lab {
    name: String,
    /// `SHOAL_LAB_DIR` of this test.
    root: PathBuf,
    subnet: &'static str,
}

impl Lab {
    fn new(subnet: &'static str) -> Lab {
        sweep_leftovers();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("st{}_{}", base36(std::process::id()), base36(n));
        let root = std::env::temp_dir().join(format!("shoal-lab-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        Lab { name, root, subnet }
    }

    fn shoal(&self, args: &[&str]) -> Output {
        std::process::Command::new(SHOAL)
            .args(args)
            .env("SHOAL_LAB_DIR", &self.root)
            .output()
            .expect("run shoal")
    }

    /// `shoal lab ARGS` must succeed; its stdout.
    fn lab_ok(&self, args: &[&str]) -> String {
        let mut argv = vec!["lab"];
        argv.extend_from_slice(args);
        let out = self.shoal(&argv);
        assert!(
            out.status.success(),
            "shoal {} failed: {}\n{}\n{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn up(&self, extra: &[&str]) -> String {
        let mut args = vec!["up", "--name", &self.name, "--subnet", self.subnet];
        args.extend_from_slice(extra);
        self.lab_ok(&args)
    }

    fn exec(&self, target: &str, command: &[&str]) -> Output {
        let mut argv = vec!["lab", "exec", &self.name, target, "--"];
        argv.extend_from_slice(command);
        self.shoal(&argv)
    }

    fn node_addr(&self, i: u8) -> Ipv4Addr {
        let net: ipnet::Ipv4Net = self.subnet.parse().expect("subnet");
        let [a, b, c, _] = net.network().octets();
        Ipv4Addr::new(a, b, c, i)
    }

    /// The CLI against the lab's manager, with the lab's credentials.
    fn cli_ok(&self, args: &[&str]) -> String {
        let manager = SocketAddr::from((self.node_addr(1), 2377)).to_string();
        let certs = self.root.join(&self.name).join("cli");
        let certs = certs.display().to_string();
        let mut argv = vec!["--manager", &manager, "--certs", &certs];
        argv.extend_from_slice(args);
        let out = self.shoal(&argv);
        assert!(
            out.status.success(),
            "shoal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn running_tasks(&self, service: &str) -> Vec<Value> {
        let out = self.cli_ok(&["--format", "json", "service", "ps", service]);
        let tasks: Value = serde_json::from_str(&out).expect("service ps json");
        tasks
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["desired"] == "running" && t["observed"] == "running")
            .collect()
    }

    /// The running tasks' names as whoami says them: `SERVICE.SLOT.ID`.
    fn task_names(&self, service: &str) -> BTreeSet<String> {
        self.running_tasks(service)
            .iter()
            .map(|t| format!("{service}.{}.{}", t["slot"], t["id"].as_str().unwrap_or("")))
            .collect()
    }

    /// `port` on each of the 3 nodes, asked from this host, is served by every one of `tasks`
    /// within 10 s.
    fn assert_served_by_all(&self, port: u16, tasks: &BTreeSet<String>) {
        for i in 1..=3 {
            let dst = SocketAddr::from((self.node_addr(i), port));
            let mut seen = BTreeSet::new();
            let all = wait_until(Duration::from_secs(10), || {
                if let Ok(task) = served_by(dst) {
                    seen.insert(task);
                }
                &seen == tasks
            });
            assert!(
                all,
                "{port} on n{i} served by {seen:?}, not by all of {tasks:?}"
            );
        }
    }

    fn prefix(&self) -> String {
        format!("{}-", self.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.shoal(&["lab", "down", &self.name]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The task that served an HTTP request to `dst`, asked from this host.
fn served_by(dst: SocketAddr) -> Result<String, String> {
    whoami_task(
        &NetnsRef::Pid(std::process::id()),
        dst,
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())
}

fn ok(out: &Output) -> bool {
    out.status.success()
}

/// The seed stack on 3 nodes: the attached container on `private` reaches `api` and
/// `postgres` by name (ping) and cannot resolve `echo`; 8080 on every node is served by both
/// `api` tasks; the matrix is the expected one; `api` scaled to 0 refuses at once on every
/// node and serves again at 2; a killed node's tasks move and 8080 keeps serving; `lab down`
/// leaves nothing.
#[test]
fn the_seed_stack_on_three_nodes() {
    let lab = Lab::new("172.29.201.0/24");
    let summary = lab.up(&[]);
    for want in [
        "n1",
        "n2",
        "n3",
        "manager",
        "seed_private",
        "api",
        "8080->80",
        "curl",
    ] {
        assert!(
            summary.contains(want),
            "{want} not in the summary:\n{summary}"
        );
    }
    assert!(lab.lab_ok(&["ls"]).contains(&lab.name));
    // Up again: nothing made twice, nothing redeployed.
    lab.up(&[]);

    let said = lab.lab_ok(&["attach", &lab.name, "--network", "private", "client"]);
    assert!(said.contains("seed_private"), "{said}");
    for name in ["api", "postgres"] {
        let ping = lab.exec("client", &["ping", "-c", "1", "-W", "3", name]);
        assert!(ok(&ping), "client cannot ping {name}: {ping:?}");
    }
    let dig = lab.exec("client", &["dig", "+short", "+time=2", "echo"]);
    assert!(
        ok(&dig) && dig.stdout.trim_ascii().is_empty(),
        "echo resolves from private: {dig:?}"
    );
    // The real PostgreSQL server (Debian's, installed by CI) runs as the postgres task, and
    // psql in an api task reaches it by name over the encrypted network.
    let mut last = None;
    let psql = wait_until(Duration::from_secs(30), || {
        let out = lab.exec(
            "api.1",
            &[
                "psql",
                "-h",
                "postgres",
                "-U",
                "postgres",
                "-At",
                "-c",
                "select 'served by ' || inet_server_addr()",
            ],
        );
        let served = ok(&out) && String::from_utf8_lossy(&out.stdout).contains("served by 10.");
        last = Some(out);
        served
    });
    assert!(psql, "psql from api.1 to postgres:5432: {last:?}");
    // api reaches echo only through its published port on a node address (the tasks' egress
    // bridge), not by name: they share no network.
    for i in 1..=3 {
        let url = format!("http://{}:8000/", lab.node_addr(i));
        let out = lab.exec("api.1", &["curl", "-s", "-m", "3", &url]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("task: seed_echo.1."),
            "api.1 -> {url}: {out:?}"
        );
    }
    let out = lab.exec("api.1", &["curl", "-s", "-m", "3", "http://echo:8000/"]);
    assert!(!ok(&out), "api.1 reached echo by name: {out:?}");
    // A task sees the resolver in its own resolv.conf.
    let resolv = lab.exec("api.1", &["cat", "/etc/resolv.conf"]);
    assert!(String::from_utf8_lossy(&resolv.stdout).contains("127.0.0.11"));

    let api = lab.task_names("seed_api");
    assert_eq!(api.len(), 2, "{api:?}");
    lab.assert_served_by_all(8080, &api);

    let expected = Path::new(EXAMPLES).join("seed/expected.json");
    let expected = expected.display().to_string();
    let matrix = lab.shoal(&["lab", "matrix", &lab.name, "--expect", &expected]);
    assert!(
        ok(&matrix),
        "the matrix differs:\n{}\n{}",
        String::from_utf8_lossy(&matrix.stdout),
        String::from_utf8_lossy(&matrix.stderr)
    );

    // Scale to 0: refused at once everywhere; back to 2: served.
    lab.cli_ok(&["service", "scale", "seed_api=0"]);
    let refused = |i: u8| {
        matches!(
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from((lab.node_addr(i), 8080)),
                Duration::from_secs(2)
            )
            .and_then(|mut c| {
                use std::io::{Read, Write};
                c.set_read_timeout(Some(Duration::from_secs(2)))?;
                c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut buf = Vec::new();
                c.read_to_end(&mut buf)?;
                Ok(buf.len())
            }),
            Err(_) | Ok(0)
        )
    };
    // `service scale` returns once the manager has the tasks stopped; the agents take them
    // out of the balancer at once (a VIP without backends resets new connections).
    let gone = wait_until(Duration::from_secs(5), || (1..=3).all(refused));
    assert!(gone, "8080 still served with api at 0");
    lab.cli_ok(&["service", "scale", "seed_api=2"]);
    let back = wait_until(Duration::from_secs(30), || {
        (1..=3).all(|i| served_by(SocketAddr::from((lab.node_addr(i), 8080))).is_ok())
    });
    assert!(back, "8080 not served again with api at 2");

    // Node loss: a node running an api task (not the manager's) is killed; the task moves
    // to a survivor and 8080 keeps serving from every surviving node.
    let hostname_of = |t: &Value| {
        let id = t["node"].as_str().unwrap_or_default().to_owned();
        let nodes: Value =
            serde_json::from_str(&lab.cli_ok(&["--format", "json", "node", "ls"])).unwrap();
        nodes[&id]["hostname"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let api_nodes: Vec<String> = lab
        .running_tasks("seed_api")
        .iter()
        .map(hostname_of)
        .collect();
    let victim = api_nodes
        .iter()
        .find(|n| *n != "n1")
        .cloned()
        .unwrap_or_else(|| "n2".into());
    lab.lab_ok(&["kill", &lab.name, &victim]);
    let survivors: Vec<u8> = (1..=3u8).filter(|i| format!("n{i}") != victim).collect();
    let moved = wait_until(Duration::from_secs(60), || {
        let tasks = lab.running_tasks("seed_api");
        tasks.len() == 2
            && tasks.iter().all(|t| hostname_of(t) != victim)
            && survivors
                .iter()
                .all(|&i| served_by(SocketAddr::from((lab.node_addr(i), 8080))).is_ok())
    });
    assert!(
        moved,
        "api not back to 2 tasks off {victim} (was on {api_nodes:?}): {:#?}",
        lab.running_tasks("seed_api")
    );
    // The survivors dropped the victim's backends: every connection is served, by the two
    // running tasks only.
    let live = lab.task_names("seed_api");
    for &i in &survivors {
        for _ in 0..20 {
            let dst = SocketAddr::from((lab.node_addr(i), 8080));
            let task = served_by(dst).unwrap_or_else(|e| panic!("{dst} after the kill: {e}"));
            assert!(
                live.contains(&task),
                "{dst} served by {task}, not one of {live:?}"
            );
        }
    }

    let down = lab.lab_ok(&["down", &lab.name]);
    assert!(down.contains("removed"), "{down}");
    let left: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&lab.prefix()))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(
        !lab.root.join(&lab.name).exists(),
        "the lab's folder is left"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&lab.prefix()), "mounts left:\n{mounts}");
    // Idempotent.
    lab.lab_ok(&["down", &lab.name]);
}

impl Lab {
    /// `lab matrix --expect examples/<example>/expected.json` passes.
    fn matrix_as_expected(&self, example: &str) -> Result<(), String> {
        let expected = Path::new(EXAMPLES).join(example).join("expected.json");
        let expected = expected.display().to_string();
        let out = self.shoal(&["lab", "matrix", &self.name, "--expect", &expected]);
        if ok(&out) {
            Ok(())
        } else {
            Err(format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn dig(&self, target: &str, name: &str) -> Vec<String> {
        let out = self.exec(target, &["dig", "+short", "+time=2", name]);
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }
}

/// The gallery stack: from an accesslog task `iotd` is one VIP and `tasks.iotd` three
/// addresses; 8010 on every node is served by both gallery tasks; the matrix is as expected,
/// still after a node is drained (its tasks move), and again after a node is cut off the
/// underlay and healed.
#[test]
fn the_gallery_stack_drain_and_partition() {
    let lab = Lab::new("172.29.202.0/24");
    let file = Path::new(EXAMPLES).join("gallery/stack.yml");
    lab.up(&["-f", &file.display().to_string()]);

    let vip = lab.dig("accesslog.1", "iotd");
    assert_eq!(vip.len(), 1, "iotd: {vip:?}");
    let tasks = lab.dig("accesslog.1", "tasks.iotd");
    assert_eq!(tasks.len(), 3, "tasks.iotd: {tasks:?}");
    assert!(!tasks.contains(&vip[0]));

    let gallery = lab.task_names("gallery_image-gallery");
    assert_eq!(gallery.len(), 2);
    lab.assert_served_by_all(8010, &gallery);
    lab.matrix_as_expected("gallery").unwrap();

    // Drain n2: nothing runs there any more, and the matrix is unchanged.
    lab.cli_ok(&["node", "update", "--availability", "drain", "n2"]);
    let moved = wait_until(Duration::from_secs(30), || {
        lab.matrix_as_expected("gallery").is_ok() && {
            let sandboxes = list_netns()
                .into_iter()
                .filter(|n| n.starts_with(&format!("{}-n2-", lab.name)))
                .filter(|n| !n.ends_with("-ingress"))
                .count();
            sandboxes == 0
        }
    });
    assert!(
        moved,
        "after draining n2: {:?}",
        lab.matrix_as_expected("gallery")
    );

    // Partition n3, then heal: gossip reconverges and the matrix is as expected again.
    // Long enough for the others to declare it failed (and the manager to call it down).
    lab.lab_ok(&["cut", &lab.name, "n3"]);
    std::thread::sleep(Duration::from_secs(12));
    lab.lab_ok(&["heal", &lab.name]);
    let back = wait_until(Duration::from_secs(60), || {
        lab.matrix_as_expected("gallery").is_ok()
    });
    assert!(
        back,
        "after cut and heal: {:?}",
        lab.matrix_as_expected("gallery")
    );
}

/// A global service: one task per node; a node added by `lab up --nodes 3` gets its own, and
/// the matrix with it is the expected one.
#[test]
fn a_global_service_follows_the_nodes() {
    let lab = Lab::new("172.29.203.0/24");
    let file = Path::new(EXAMPLES).join("global/stack.yml");
    lab.up(&["--nodes", "2", "-f", &file.display().to_string()]);
    assert_eq!(lab.running_tasks("global_probe").len(), 2);
    lab.up(&["--nodes", "3"]);
    let three = wait_until(Duration::from_secs(30), || {
        lab.running_tasks("global_probe").len() == 3
    });
    assert!(three, "{:#?}", lab.running_tasks("global_probe"));
    let as_expected = wait_until(Duration::from_secs(30), || {
        lab.matrix_as_expected("global").is_ok()
    });
    assert!(as_expected, "{:?}", lab.matrix_as_expected("global"));

    // The distribution over web's two tasks: through 8020 on every node and the VIP from a
    // probe task, round robin then Maglev (the agents restarted with it).
    for algorithm in ["roundrobin", "maglev"] {
        let png = lab.root.join(format!("{algorithm}.png"));
        let png = png.display().to_string();
        let out = lab.shoal(&[
            "--format",
            "json",
            "lab",
            "bench",
            &lab.name,
            "web",
            "--connections",
            "200",
            "--algorithm",
            algorithm,
            "--png",
            &png,
        ]);
        assert!(ok(&out), "bench {algorithm}: {out:?}");
        let report: Value = serde_json::from_slice(&out.stdout).expect("bench json");
        assert_eq!(report["algorithm"], algorithm);
        let paths = report["paths"].as_array().expect("paths");
        let names: Vec<&str> = paths.iter().filter_map(|p| p["path"].as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().filter(|p| p.starts_with("8020@n")).count() == 3);
        assert!(
            names.iter().any(|p| p.starts_with("vip from probe.")),
            "{names:?}"
        );
        for p in paths {
            assert_eq!(p["errors"], 0, "{p}");
            let counts: Vec<u64> = ["web.1", "web.2"]
                .iter()
                .map(|t| p["per_task"][t].as_u64().unwrap_or(0))
                .collect();
            assert_eq!(counts.iter().sum::<u64>(), 200, "{p}");
            assert!(counts.iter().all(|c| *c >= 40), "both tasks serve: {p}");
            if algorithm == "roundrobin" {
                assert_eq!(counts, vec![100, 100], "round robin is exact: {p}");
            }
        }
        let chart = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(chart > 1000, "no chart at {png}");
    }
}
