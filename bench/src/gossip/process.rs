//! A gossip agent as a child process inside the run's namespace: its stdout and stderr go to
//! one pipe, a thread reads it line by line and stamps each membership event with the
//! [`Instant`] the line arrived (the first time only, as `serf_bench.py` does). Also the
//! agent's memory and sockets from `/proc`, and [`run_bounded`] for short commands.
//!
//! Every wait here has a deadline; an agent is killed (SIGKILL, by its own `Child`) when it
//! drops.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddrV4;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A membership event an agent logs about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Join,
    Suspect,
    Failed,
    Left,
    Recovered,
}

/// Turns one output line into the event it reports, if any: (kind, member name).
pub(super) type Parser = fn(&str) -> Option<(Kind, String)>;

/// Lines kept for error messages.
const TAIL: usize = 30;
/// How often the waits look at the agents' events (the python harness: 2 ms).
const POLL: Duration = Duration::from_millis(2);

/// What the reader thread saw.
#[derive(Debug, Default)]
struct Seen {
    first: BTreeMap<(Kind, String), Instant>,
    tail: VecDeque<String>,
}

/// One running agent.
#[derive(Debug)]
pub(super) struct Agent {
    pub(super) name: String,
    child: Child,
    seen: Arc<Mutex<Seen>>,
}

/// `argv` prefixed with `ip netns exec NS` (which execs argv: the pid is argv's own).
pub(super) fn in_ns(ns: &str, argv: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["ip", "netns", "exec", ns].map(String::from).to_vec();
    v.extend(argv.iter().cloned());
    v
}

impl Agent {
    /// Starts `argv` inside `ns` with its output read by a thread of its own.
    pub(super) fn spawn(
        ns: &str,
        name: &str,
        argv: &[String],
        parse: Parser,
    ) -> Result<Agent, String> {
        let full = in_ns(ns, argv);
        let (reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let child = {
            // The Command holds the write ends until it drops: at the end of this block, so
            // the reader sees EOF when the agent exits.
            let mut cmd = Command::new(&full[0]);
            cmd.args(&full[1..])
                .stdin(Stdio::null())
                .stdout(writer.try_clone().map_err(|e| format!("pipe: {e}"))?)
                .stderr(writer);
            cmd.spawn()
                .map_err(|e| format!("start {name} ({}): {e}", full.join(" ")))?
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let theirs = Arc::clone(&seen);
        let thread = std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || read_lines(reader, &theirs, parse));
        let mut agent = Agent {
            name: name.to_string(),
            child,
            seen,
        };
        if let Err(e) = thread {
            agent.kill();
            return Err(format!("reader thread of {name}: {e}"));
        }
        Ok(agent)
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When this agent first logged `kind` about `member`.
    pub(super) fn seen(&self, kind: Kind, member: &str) -> Option<Instant> {
        self.lock().first.get(&(kind, member.to_string())).copied()
    }

    /// Its last output lines, for an error message.
    pub(super) fn tail(&self, lines: usize) -> String {
        let s = self.lock();
        let skip = s.tail.len().saturating_sub(lines);
        s.tail
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `None` while it runs, else how it ended.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// VmRSS of the agent's process, KiB.
    pub(super) fn rss_kib(&self) -> Option<u64> {
        crate::rss_kib(self.pid())
    }

    /// Whether the agent listens on every TCP address of `tcp` and has a UDP socket on every
    /// address of `udp` (read from `/proc/PID/net`, which shows the agent's namespace, so
    /// nothing is sent to it).
    pub(super) fn bound(&self, tcp: &[SocketAddrV4], udp: &[SocketAddrV4]) -> bool {
        let table = |proto: &str| {
            std::fs::read_to_string(format!("/proc/{}/net/{proto}", self.pid())).unwrap_or_default()
        };
        let (t, u) = (table("tcp"), table("udp"));
        tcp.iter().all(|a| has_socket(&t, *a, Some("0A")))
            && udp.iter().all(|a| has_socket(&u, *a, None))
    }

    /// Waits (at most `timeout`) until [`bound`](Self::bound) holds; fails early if the agent
    /// exits.
    pub(super) fn wait_bound(
        &mut self,
        tcp: &[SocketAddrV4],
        udp: &[SocketAddrV4],
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.bound(tcp, udp) {
                return Ok(());
            }
            if let Some(st) = self.exited() {
                return Err(self.died(st));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} does not listen on {tcp:?} (TCP) and {udp:?} (UDP) after {timeout:?}; \
                     its last lines:\n{}",
                    self.name,
                    self.tail(TAIL)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// "nX exited (status); its last lines: ...".
    pub(super) fn died(&self, status: ExitStatus) -> String {
        format!(
            "{} exited ({status}); its last lines:\n{}",
            self.name,
            self.tail(TAIL)
        )
    }

    /// SIGKILL now (a crash, not a leave) and reap it, waiting at most 5 s.
    pub(super) fn kill(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The reader thread: stamps each line as it arrives, records the first time of each event.
fn read_lines(reader: impl Read, seen: &Mutex<Seen>, parse: Parser) {
    let mut r = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let now = Instant::now();
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        let event = parse(line);
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = event {
            s.first.entry(key).or_insert(now);
        }
        if s.tail.len() == TAIL {
            s.tail.pop_front();
        }
        s.tail.push_back(line.to_string());
    }
}

/// Whether a `/proc/net/{tcp,udp}` table has a socket bound to `addr` (or to 0.0.0.0 on its
/// port), in state `state` (hex, `0A` = LISTEN) if given.
fn has_socket(table: &str, addr: SocketAddrV4, state: Option<&str>) -> bool {
    // The kernel prints the address as the native-endian u32 of its network-order bytes.
    let exact = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    );
    let any = format!("00000000:{:04X}", addr.port());
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && (f[1] == exact || f[1] == any) && state.is_none_or(|s| f[3] == s)
    })
}

/// Waits until every agent of `agents` logged `kind` about `member`, at most `timeout`.
/// `Ok`: the times; `Err`: the names of those that did not.
pub(super) fn wait_all(
    agents: &[&Agent],
    kind: Kind,
    member: &str,
    timeout: Duration,
) -> Result<Vec<Instant>, Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: Vec<Option<Instant>> = agents.iter().map(|a| a.seen(kind, member)).collect();
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            return Err(agents
                .iter()
                .zip(&seen)
                .filter(|(_, s)| s.is_none())
                .map(|(a, _)| a.name.clone())
                .collect());
        }
        std::thread::sleep(POLL);
    }
}

/// How a bounded command ended.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) status: ExitStatus,
    /// stdout and stderr, interleaved (the last 64 KiB).
    pub(super) output: String,
}

impl Finished {
    /// `Ok(self)` if it succeeded, else an error with its status and last lines.
    pub(super) fn ok(self, what: &str) -> Result<Finished, String> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(format!(
                "{what} failed ({}): {}",
                self.status,
                last_lines(&self.output, 12)
            ))
        }
    }
}

/// The last `n` lines of `s`.
pub(super) fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `argv` to completion, killing it after `timeout`; its output comes back with it.
pub(super) fn run_bounded(argv: &[String], timeout: Duration) -> Result<Finished, String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let shown = argv.join(" ");
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut child = {
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(|e| format!("pipe: {e}"))?)
            .stderr(writer);
        cmd.spawn().map_err(|e| format!("{shown}: {e}"))?
    };
    let (tx, rx) = mpsc::channel();
    let _reader = std::thread::Builder::new()
        .name("bounded-output".into())
        .spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                if out.len() > 128 * 1024 {
                    out.drain(..out.len() - 64 * 1024);
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&out).into_owned());
        })
        .map_err(|e| format!("{shown}: reader thread: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown}: still running after {timeout:?}, killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    // A grandchild could keep the pipe open: do not wait for its end for long.
    let output = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    Ok(Finished { status, output })
}

#[cfg(test)]
mod unit {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn finds_sockets_in_proc_net() {
        let table = "  sl  local_address rem_address   st tx_queue\n   \
                     0: 0A00007F:1F0A 00000000:0000 0A 00000000:00000000\n   \
                     1: 00000000:1CDD 00000000:0000 07 00000000:00000000\n";
        let a = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 10), 7946);
        assert!(has_socket(table, a, Some("0A")));
        assert!(!has_socket(table, a, Some("07")));
        let b = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 7946);
        assert!(!has_socket(table, b, None));
        let any = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 12), 7389);
        assert!(has_socket(table, any, None));
    }
}
