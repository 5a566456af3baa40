#![allow(clippy::unwrap_used)]
//! The process task runtime (control::agent::runtime) on real namespaces: a task runs in the
//! network namespace it is given, with its own /etc/resolv.conf (127.0.0.11), hostname,
//! environment and log; `shoal whoami` as a task says who it is over HTTP and echoes other
//! connections; the stop sequence (connection grace, SIGTERM, SIGKILL); health checks run
//! inside the task's namespaces; a missing namespace is a clear error that leaves nothing.
//!
//! Needs root. Every wait is bounded; traffic stays inside the test's own namespaces.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control::agent::runtime::{
    ExitKind, Health, HealthCheck, HealthTest, Runtime, RuntimeConfig, StopEnd, TaskEvent,
    TaskSpec, TaskStatus,
};
use dataplane::shell::netns::{NetnsRef, in_netns};
use tests::testbed::{Container, Testbed, wait_until};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal-under-test");
/// Generous for a loaded CI machine; every wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(15);
const TASK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 5);

/// A container namespace, a runtime whose state lives in a temporary folder, and that
/// folder. Fields drop in order: the runtime kills its tasks before the namespace goes.
struct Lab {
    runtime: Runtime,
    bed: Testbed,
    container: Container,
    dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // The shared parent too, when this was the last test using it.
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

impl Lab {
    fn new(test: &str) -> Lab {
        let mut bed = Testbed::new(test);
        let container = bed.add_container("task");
        let dir = std::env::temp_dir()
            .join("shoal-runtime-test")
            .join(bed.prefix());
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = Runtime::new(RuntimeConfig {
            state_dir: dir.join("state"),
        });
        Lab {
            runtime,
            bed,
            container,
            dir: TempDir(dir),
        }
    }

    /// Gives the container an interface with [`TASK_ADDR`]: one end of a veth pair whose
    /// both ends stay in the container, so nothing leaves it.
    fn add_address(&self) {
        let ns = &self.container.netns_name;
        let cidr = format!("{TASK_ADDR}/24");
        for argv in [
            &[
                "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ][..],
            &["ip", "addr", "add", &cidr, "dev", "v0"],
            &["ip", "link", "set", "v1", "up"],
            &["ip", "link", "set", "v0", "up"],
        ] {
            self.bed.exec_ok(ns, argv);
        }
    }

    fn spec(&self, id: &str, command: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.to_owned(),
            name: format!("web.1.{id}"),
            service: "web".to_owned(),
            node: "node-a".to_owned(),
            hostname: format!("host-{id}"),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: BTreeMap::from([("GREETING".to_owned(), "hello there".to_owned())]),
            addresses: vec![TASK_ADDR],
            netns: self.container.ns.path(),
            log: self.log(id),
            health: None,
        }
    }

    fn log(&self, id: &str) -> PathBuf {
        self.dir.0.join("logs").join(format!("{id}.log"))
    }

    fn read_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log(id)).unwrap_or_default()
    }

    fn wait_for_log(&self, id: &str, text: &str) {
        assert!(
            wait_until(WAIT, || self.read_log(id).contains(text)),
            "task {id} did not log {text:?}; its log:\n{}",
            self.read_log(id)
        );
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.dir.0.join("state").join(id)
    }
}

#[allow(clippy::disallowed_methods)] // tests measure wall time
fn now() -> Instant {
    Instant::now()
}

fn inode(path: impl AsRef<Path>) -> u64 {
    std::fs::metadata(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
        .ino()
}

/// The processes of group `pgid` that still run (zombies, dead but not yet reaped by
/// init, do not count).
fn live_in_group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so start after its ')'.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        let state = fields.next()?;
        let pgrp: u32 = fields.nth(1)?.parse().ok()?;
        (pgrp == pgid && state != "Z" && state != "X").then_some(pid)
    })
    .collect()
}

/// Connects from inside `ns` to 127.0.0.1:port, with read and write timeouts.
fn connect(ns: &NetnsRef, port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

/// One HTTP/1.1 request from inside `ns`; the whole response (the server closes).
fn http_get(ns: &NetnsRef, port: u16, path: &str) -> String {
    let mut stream = connect(ns, port).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: task\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn echo_once(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).unwrap();
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, text);
}

#[test]
fn a_task_sees_its_own_resolv_conf_hostname_and_environment_and_logs_both_streams() {
    let lab = Lab::new("rt_files");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let script = "echo to-stdout; echo to-stderr >&2; \
                  echo '--resolv'; cat /etc/resolv.conf; \
                  echo '--hostname'; cat /proc/sys/kernel/hostname; cat /etc/hostname; \
                  echo '--hosts'; cat /etc/hosts; \
                  echo '--env'; env; echo '--done'; sleep 1000";
    let spec = lab.spec("t1", &["sh", "-c", script]);
    let task = lab.runtime.start(spec).unwrap();
    lab.wait_for_log("t1", "--done");
    let log = lab.read_log("t1");

    assert!(log.contains("to-stdout\n"), "{log}");
    assert!(log.contains("to-stderr\n"), "{log}");
    assert!(
        log.contains("--resolv\nnameserver 127.0.0.11\noptions ndots:0\n--hostname\n"),
        "{log}"
    );
    assert!(
        log.contains("--hostname\nhost-t1\nhost-t1\n--hosts\n"),
        "{log}"
    );
    assert!(log.contains("127.0.0.1\tlocalhost\n"), "{log}");
    assert!(log.contains("10.9.0.5\thost-t1 web.1.t1\n"), "{log}");
    for line in [
        "GREETING=hello there",
        "SHOAL_TASK_NAME=web.1.t1",
        "SHOAL_TASK_ID=t1",
        "SHOAL_NODE=node-a",
        "SHOAL_SERVICE=web",
        "SHOAL_ADDRESSES=10.9.0.5",
        "HOSTNAME=host-t1",
    ] {
        assert!(log.lines().any(|l| l == line), "no {line:?} in\n{log}");
    }
    // The agent's own environment is not the task's (cargo sets this one for the test).
    assert!(!log.contains("CARGO_MANIFEST_DIR="), "{log}");

    // In the given network namespace, in its own mount and UTS namespaces.
    let pid = task.pid();
    assert_eq!(
        inode(format!("/proc/{pid}/ns/net")),
        inode(lab.container.ns.path())
    );
    assert_ne!(
        inode(format!("/proc/{pid}/ns/mnt")),
        inode("/proc/self/ns/mnt")
    );
    assert_ne!(
        inode(format!("/proc/{pid}/ns/uts")),
        inode("/proc/self/ns/uts")
    );
    // The host's files and hostname did not change while it runs.
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        host_resolv
    );
    assert_eq!(std::fs::read_to_string("/etc/hosts").unwrap(), host_hosts);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
    assert!(matches!(
        lab.runtime.status("t1"),
        Some(TaskStatus::Running { .. })
    ));
    assert!(lab.state_dir("t1").join("resolv.conf").exists());

    let stopped = lab
        .runtime
        .stop("t1", Duration::ZERO, Duration::from_secs(5))
        .unwrap();
    assert_eq!(stopped.end, StopEnd::Terminated);
    assert_eq!(stopped.exit.kind, ExitKind::Signal(15));
    assert!(!lab.state_dir("t1").exists(), "files removed on stop");
    assert!(lab.runtime.tasks().is_empty());
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        host_resolv
    );
}

#[test]
fn whoami_as_a_task_answers_http_with_its_name_and_echoes_other_connections() {
    let lab = Lab::new("rt_whoami");
    lab.add_address();
    let spec = lab.spec("w1", &[SHOAL, "whoami", "--port", "8080", "--port", "9090"]);
    lab.runtime.start(spec).unwrap();
    lab.wait_for_log("w1", "listening");
    let ns = &lab.container.ns;

    let response = http_get(ns, 8080, "/");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("Connection: close\r\n"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "task: web.1.w1", "{body}");
    assert_eq!(lines[1], "node: node-a", "{body}");
    assert_eq!(lines[2], "addresses: 10.9.0.5", "{body}");
    assert!(lines[3].starts_with("client: 127.0.0.1:"), "{body}");

    let response = http_get(ns, 9090, "/json");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["task"], "web.1.w1");
    assert_eq!(json["node"], "node-a");
    assert_eq!(json["addresses"], serde_json::json!(["10.9.0.5"]));
    assert!(
        json["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{json}"
    );

    // Not HTTP: an echo, until the client ends it.
    let mut stream = connect(ns, 9090).unwrap();
    echo_once(&mut stream, b"hello\n");
    echo_once(&mut stream, b"no newline");
    echo_once(&mut stream, b"GET nothing\n");
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    let stopped = lab
        .runtime
        .stop("w1", Duration::ZERO, Duration::from_secs(5))
        .unwrap();
    assert_eq!(stopped.end, StopEnd::Terminated);
}

#[test]
fn stop_kills_a_task_that_ignores_sigterm_and_terminates_one_that_handles_it() {
    let lab = Lab::new("rt_stop");
    lab.runtime
        .start(lab.spec(
            "deaf",
            &["sh", "-c", "trap '' TERM; echo ready; sleep 1000"],
        ))
        .unwrap();
    lab.runtime
        .start(lab.spec(
            "polite",
            &[
                "sh",
                "-c",
                "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done",
            ],
        ))
        .unwrap();
    lab.runtime
        .start(lab.spec("plain", &["sleep", "1000"]))
        .unwrap();
    lab.runtime
        .start(lab.spec("brief", &["sh", "-c", "sleep 1"]))
        .unwrap();
    lab.wait_for_log("deaf", "ready");
    lab.wait_for_log("polite", "ready");

    let deaf = lab.runtime.task("deaf").unwrap();
    let started = now();
    let stopped = lab
        .runtime
        .stop("deaf", Duration::ZERO, Duration::from_secs(1))
        .unwrap();
    let took = started.elapsed();
    assert_eq!(stopped.end, StopEnd::Killed);
    assert_eq!(stopped.exit.kind, ExitKind::Signal(9));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Its child (sleep, which inherited the ignored SIGTERM) went with it.
    assert!(
        wait_until(WAIT, || live_in_group(deaf.pid()).is_empty()),
        "left running: {:?}",
        live_in_group(deaf.pid())
    );

    let stopped = lab
        .runtime
        .stop("polite", Duration::ZERO, Duration::from_secs(10))
        .unwrap();
    assert_eq!(stopped.end, StopEnd::Terminated);
    assert_eq!(stopped.exit.kind, ExitKind::Code(3));
    assert!(lab.read_log("polite").contains("got-term"));

    let stopped = lab
        .runtime
        .stop("plain", Duration::ZERO, Duration::from_secs(10))
        .unwrap();
    assert_eq!(stopped.end, StopEnd::Terminated);
    assert_eq!(stopped.exit.kind, ExitKind::Signal(15));

    // One that ends by itself within the connection grace is not signalled.
    let started = now();
    let stopped = lab
        .runtime
        .stop("brief", Duration::from_secs(10), Duration::from_secs(1))
        .unwrap();
    assert!(
        matches!(stopped.end, StopEnd::ExitedInGrace | StopEnd::AlreadyExited),
        "{stopped:?}"
    );
    assert_eq!(stopped.exit.kind, ExitKind::Code(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(lab.runtime.tasks().is_empty());
}

#[test]
fn a_connection_open_before_stop_keeps_working_through_the_connection_grace() {
    let lab = Lab::new("rt_grace");
    lab.runtime
        .start(lab.spec("g1", &[SHOAL, "whoami", "--port", "9090"]))
        .unwrap();
    lab.wait_for_log("g1", "listening");
    let mut stream = connect(&lab.container.ns, 9090).unwrap();
    echo_once(&mut stream, b"before the stop\n");

    let grace = Duration::from_secs(3);
    std::thread::scope(|scope| {
        let started = now();
        let stopping = scope.spawn(|| lab.runtime.stop("g1", grace, Duration::from_secs(5)));
        // Within the grace the process is not signalled: the connection still echoes.
        std::thread::sleep(Duration::from_millis(500));
        echo_once(&mut stream, b"during the grace\n");
        std::thread::sleep(Duration::from_millis(1000));
        echo_once(&mut stream, b"still during the grace\n");
        assert!(matches!(
            lab.runtime.status("g1"),
            Some(TaskStatus::Running { .. })
        ));
        // The connection finishes within the grace.
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(started.elapsed() < grace, "{:?}", started.elapsed());

        let stopped = stopping.join().unwrap().unwrap();
        let took = started.elapsed();
        assert!(took >= grace, "signalled before the grace ended: {took:?}");
        assert!(took < grace + Duration::from_secs(5), "{took:?}");
        assert_eq!(stopped.end, StopEnd::Terminated);
        assert_eq!(stopped.exit.kind, ExitKind::Signal(15));
    });
}

#[test]
fn health_checks_run_inside_the_task_and_mark_it_healthy_or_unhealthy() {
    let lab = Lab::new("rt_health");
    let events = lab.runtime.events();
    let check = |test, timeout_ms, retries| HealthCheck {
        test,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(timeout_ms),
        retries,
        start_period: Duration::ZERO,
    };
    let cmd = |argv: &[&str]| HealthTest::Cmd(argv.iter().map(|s| (*s).to_owned()).collect());
    let mut specs = Vec::new();
    let mut failing = lab.spec("fails", &["sleep", "1000"]);
    failing.health = Some(check(cmd(&["false"]), 2000, 3));
    specs.push(failing);
    // Passes only inside the task's mount and UTS namespaces: the host's resolv.conf does
    // not name 127.0.0.11, and its hostname is not the task's.
    let mut inside = lab.spec("inside", &["sleep", "1000"]);
    inside.health = Some(check(
        cmd(&[
            "sh",
            "-c",
            "grep -q 127.0.0.11 /etc/resolv.conf && test \"$(cat /proc/sys/kernel/hostname)\" = host-inside",
        ]),
        2000,
        3,
    ));
    specs.push(inside);
    let mut slow = lab.spec("slow", &["sleep", "1000"]);
    slow.health = Some(check(cmd(&["sleep", "10"]), 200, 1));
    specs.push(slow);
    let mut tcp_up = lab.spec("tcp-up", &[SHOAL, "whoami", "--port", "8080"]);
    tcp_up.health = Some(HealthCheck {
        // Failures before the server listens do not count.
        start_period: Duration::from_secs(10),
        ..check(HealthTest::TcpConnect(8080), 1000, 3)
    });
    specs.push(tcp_up);
    let mut tcp_down = lab.spec("tcp-down", &["sleep", "1000"]);
    tcp_down.health = Some(check(HealthTest::TcpConnect(8081), 1000, 2));
    specs.push(tcp_down);

    let started = now();
    for spec in specs {
        let task = lab.runtime.start(spec).unwrap();
        assert_eq!(task.health(), Some(Health::Starting));
    }
    let expected = [
        ("fails", Health::Unhealthy),
        ("inside", Health::Healthy),
        ("slow", Health::Unhealthy),
        ("tcp-up", Health::Healthy),
        ("tcp-down", Health::Unhealthy),
    ];
    for (id, health) in expected {
        assert!(
            wait_until(WAIT, || lab.runtime.health(id) == Some(health)),
            "{id}: {:?}, not {health:?}",
            lab.runtime.health(id)
        );
    }
    // Three failures 100 ms apart at least.
    assert!(started.elapsed() >= Duration::from_millis(300));

    let mut seen = BTreeMap::new();
    while let Ok(event) = events.recv_timeout(Duration::from_millis(100)) {
        if let TaskEvent::Health { task, health, .. } = event {
            seen.entry(task).or_insert_with(Vec::new).push(health);
        }
    }
    for (id, health) in expected {
        assert_eq!(seen.get(id), Some(&vec![health]), "{seen:?}");
    }
    // A stopped task is forgotten, with its health.
    lab.runtime
        .stop("fails", Duration::ZERO, Duration::from_secs(5))
        .unwrap();
    assert_eq!(lab.runtime.health("fails"), None, "forgotten once stopped");
}

#[test]
fn a_missing_netns_is_a_clear_error_and_leaves_nothing_behind() {
    let lab = Lab::new("rt_missing");
    let mut spec = lab.spec("m1", &["sleep", "1000"]);
    let missing = PathBuf::from(format!("/run/netns/{}-missing", lab.bed.prefix()));
    spec.netns = missing.clone();
    let err = lab.runtime.start(spec).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "task web.1.m1: netns {} does not exist: the agent must create the task's namespace first",
            missing.display()
        )
    );
    assert!(!lab.state_dir("m1").exists());
    assert!(!lab.log("m1").exists());
    assert!(lab.runtime.tasks().is_empty());

    // A file that is not a namespace.
    let mut spec = lab.spec("m2", &["sleep", "1000"]);
    let plain = lab.dir.0.join("not-a-netns");
    std::fs::write(&plain, "").unwrap();
    spec.netns = plain;
    let err = lab.runtime.start(spec).unwrap_err().to_string();
    assert!(err.contains("is not a network namespace"), "{err}");
    assert!(!lab.state_dir("m2").exists());

    // A command that does not exist: the child's setup ran, exec failed; nothing remains.
    let spec = lab.spec("m3", &["/nonexistent/shoal-test-program"]);
    let err = lab.runtime.start(spec).unwrap_err().to_string();
    assert!(
        err.starts_with("task web.1.m3: cannot run \"/nonexistent/shoal-test-program\""),
        "{err}"
    );
    assert!(err.contains("check the command and the PATH"), "{err}");
    assert!(!lab.state_dir("m3").exists());
    assert!(!lab.log("m3").exists());
    assert!(lab.runtime.tasks().is_empty());
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &lab.container.netns_name])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&pids.stdout).trim().is_empty(),
        "processes left in the namespace: {}",
        String::from_utf8_lossy(&pids.stdout)
    );
}
