//! The load client: `shared/anchors/lbclient.rs` on threads of this process. It opens `total`
//! short TCP connections, `conc` at a time (one blocking thread each), and for each measures
//! connect start → first byte of the reply (the backend's name), reads to EOF and closes. It
//! stops after `total` connections or after the cell's wall-clock cap, whichever comes first;
//! each connect and each read waits 3 s at most.
//!
//! The threads enter the client's namespace themselves (`setns` on threads this module spawns
//! and owns), so every socket they open is the namespace's, and they carry one name,
//! [`THREAD_NAME`], for the CPU accounting of [`super::cpu`].

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dataplane::shell::netns::NetnsRef;
use nix::sched::CloneFlags;

/// The name of every client thread.
pub(super) const THREAD_NAME: &str = "mesh-client";

/// How long one connect or one read may wait (the anchor's client: 3 s).
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// What one cell of connections gave.
#[derive(Clone, Debug, Default)]
pub(super) struct Outcome {
    /// Connections that got a reply.
    pub ok: usize,
    /// Failed connections by reason.
    pub errors: BTreeMap<String, usize>,
    /// From the moment every thread was ready to the last one's end.
    pub elapsed_s: f64,
    /// Connect start → first byte, µs, sorted.
    pub lat_us: Vec<u32>,
    /// Replies by backend name.
    pub per_backend: BTreeMap<String, usize>,
    /// The wall-clock cap stopped the cell before `total` connections.
    pub timed_out: bool,
    /// CPU time of the client threads (their own schedstat), s.
    pub cpu_s: f64,
}

impl Outcome {
    pub(super) fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// Successful connections per second.
    pub(super) fn cps(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.ok as f64 / self.elapsed_s
        } else {
            f64::NAN
        }
    }

    /// The `p`th percentile of the latencies (the anchor's rank: round(p/100 · (n-1))), µs.
    pub(super) fn pct(&self, p: f64) -> f64 {
        let n = self.lat_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (n as f64 - 1.0)).round() as usize;
        f64::from(self.lat_us[i.min(n - 1)])
    }

    fn merge(&mut self, part: Part) {
        self.ok += part.lat_us.len();
        self.cpu_s += part.cpu_ns as f64 / 1e9;
        self.lat_us.extend(part.lat_us);
        for (k, v) in part.per_backend {
            *self.per_backend.entry(k).or_default() += v;
        }
        for (k, v) in part.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// One thread's share.
#[derive(Debug, Default)]
struct Part {
    cpu_ns: u64,
    lat_us: Vec<u32>,
    per_backend: BTreeMap<String, usize>,
    errors: BTreeMap<String, usize>,
}

/// Opens `total` connections from namespace `ns` to `dst`, `conc` at a time, for `cap` at most.
/// The clock starts when every thread has entered the namespace.
#[allow(clippy::disallowed_methods)] // bench: reads the clock
pub(super) fn run(
    ns: &NetnsRef,
    dst: SocketAddr,
    total: usize,
    conc: usize,
    cap: Duration,
) -> io::Result<Outcome> {
    let conc = conc.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    // Held for writing until every thread is ready: the threads wait on it to start together.
    let gate = Arc::new(RwLock::new(()));
    let held = gate.write().unwrap_or_else(|p| p.into_inner());
    let mut handles = Vec::with_capacity(conc);
    let mut failure = None;
    for _ in 0..conc {
        let fd = match ns.open() {
            Ok(fd) => fd,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let (next, stop, ready, gate) = (next.clone(), stop.clone(), ready.clone(), gate.clone());
        let per_thread = total / conc + 1;
        let spawned = std::thread::Builder::new().name(THREAD_NAME.into()).spawn(
            move || -> io::Result<Part> {
                let entered = enter(fd);
                ready.fetch_add(1, Ordering::SeqCst);
                drop(gate.read().unwrap_or_else(|p| p.into_inner()));
                entered?;
                let deadline = Instant::now() + cap;
                let mut part = Part {
                    lat_us: Vec::with_capacity(per_thread),
                    ..Part::default()
                };
                loop {
                    if stop.load(Ordering::Relaxed) || next.fetch_add(1, Ordering::Relaxed) >= total
                    {
                        break;
                    }
                    if Instant::now() > deadline {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    let t0 = Instant::now();
                    let result = TcpStream::connect_timeout(&dst, IO_TIMEOUT)
                        .map_err(|e| format!("connect: {}", kind(&e)))
                        .and_then(|s| exchange(s, t0));
                    match result {
                        Ok((lat, name)) => {
                            part.lat_us.push(lat);
                            *part.per_backend.entry(name).or_default() += 1;
                        }
                        Err(e) => *part.errors.entry(e).or_default() += 1,
                    }
                }
                part.cpu_ns = super::cpu::this_thread_ns().unwrap_or(0);
                Ok(part)
            },
        );
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_some() {
        // Whatever started does nothing.
        next.store(total, Ordering::Relaxed);
    }
    // Every thread enters its namespace within moments; bounded anyway.
    for _ in 0..5000 {
        if ready.load(Ordering::SeqCst) >= handles.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    drop(held);
    let mut out = Outcome::default();
    for h in handles {
        match h.join() {
            Ok(Ok(part)) => out.merge(part),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(io::Error::other("a client thread panicked")),
        }
    }
    out.elapsed_s = start.elapsed().as_secs_f64();
    out.timed_out = stop.load(Ordering::Relaxed);
    out.lat_us.sort_unstable();
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Moves the calling thread (one of ours) into the namespace `fd` refers to.
pub(super) fn enter(fd: OwnedFd) -> io::Result<()> {
    nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("setns: {e}")))
}

/// Reads the reply to EOF (64 bytes at most): (µs from `t0` to its first byte, its text).
pub(super) fn exchange(mut s: TcpStream, t0: Instant) -> Result<(u32, String), String> {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 64];
    let mut got = 0usize;
    let mut first: Option<Duration> = None;
    let mut failed = None;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                if first.is_none() {
                    first = Some(t0.elapsed());
                }
                got += n;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match (first, failed) {
        (Some(d), _) => {
            let lat = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
            Ok((lat, String::from_utf8_lossy(&buf[..got]).trim().to_string()))
        }
        (None, Some(e)) => Err(format!("read: {}", kind(&e))),
        (None, None) => Err("closed without a reply".into()),
    }
}

/// A connection from a fixed source address (SO_REUSEADDR, bound before connecting), for flows
/// that must keep their 5-tuple from one round to the next. The connect waits [`IO_TIMEOUT`]
/// at most (Linux bounds a blocking connect by SO_SNDTIMEO).
pub(super) fn connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    use nix::sys::time::{TimeVal, TimeValLike};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let timeout = TimeVal::seconds(IO_TIMEOUT.as_secs() as i64);
    setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(src))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    Ok(TcpStream::from(fd))
}

/// A short name for an error: `refused`, `timed out`, `reset`, else the kind's debug name.
pub(super) fn kind(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::ConnectionReset => "reset".into(),
        k => format!("{k:?}"),
    }
}
