//! A real HashiCorp Serf agent for the gossip tests (Debian's `serf`), on loopback, killed
//! by a drop guard; its log is printed when a test fails.

#![allow(dead_code)] // each test file uses its own part of it

use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn serf_installed() -> bool {
    match Command::new("serf").arg("version").output() {
        Ok(out) => out.status.success(),
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("cannot run serf: {e}"),
    }
}

/// A loopback port free for both TCP and UDP (memberlist binds both). Not 7946: tests run in
/// parallel, and a fixed port would collide with the other test or a real agent.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((LOOPBACK, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both TCP and UDP");
}

/// A running `serf agent`, killed on drop.
pub struct Serf {
    pub child: Child,
    pub addr: SocketAddr,
    pub rpc: String,
    pub log: PathBuf,
}

impl Serf {
    pub fn start(name: &str, key: Option<&str>) -> Self {
        let port = free_port();
        let rpc = format!("-rpc-addr=127.0.0.1:{}", free_port());
        let log =
            std::env::temp_dir().join(format!("shoal-serf-{}-{port}.log", std::process::id()));
        let file = File::create(&log).unwrap();
        let mut cmd = Command::new("serf");
        cmd.args(["agent", &format!("-node={name}"), "-log-level=debug", &rpc])
            .arg(format!("-bind=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Some(key) = key {
            cmd.arg(format!("-encrypt={key}"));
        }
        Self {
            child: cmd.spawn().unwrap(),
            addr: SocketAddr::new(LOOPBACK, port),
            rpc,
            log,
        }
    }

    /// `serf members` as (name → status).
    pub fn members(&self) -> BTreeMap<String, String> {
        let out = Command::new("serf")
            .args(["members", "-format=json", &self.rpc])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut members = BTreeMap::new();
        for m in json["members"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default().to_string();
            members.insert(name, m["status"].as_str().unwrap_or_default().to_string());
        }
        members
    }
}

impl Drop for Serf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- serf agent log ---\n{log}");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Serf {
    /// `serf join` this agent to `other`.
    pub fn join(&self, other: SocketAddr) -> bool {
        Command::new("serf")
            .args(["join", &self.rpc, &other.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// Polls `cond` every 200 ms for up to `secs` seconds.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 5 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}
