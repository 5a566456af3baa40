//! A running dataplane: one OS thread per node that owns the forwarding core, the overlay
//! socket and every TAP, and moves frames between them with batched I/O.
//!
//! Why one thread and epoll rather than tokio tasks: the core is a plain `&mut` struct; a
//! single owner needs no locks on the packet path, and epoll with batches of recvmmsg /
//! sendmmsg keeps syscalls per packet low. Table and key updates arrive on a channel and
//! are applied between batches, so forwarding never stops for them.

use crate::forward::{Counters, Forwarder, HEADROOM, TAILROOM, Update, UpdateError, Verdict};
use crate::shell::link::mtu_of_address;
use crate::shell::netns::NetnsRef;
use crate::shell::tap::{Tap, TapConfig};
use crate::shell::udp::{OverlaySocket, RecvBatch, SendBatch};
use crate::types::{EndpointId, SenderId, Timestamp};
use crate::wire::vxlan::{PLAIN_OVERHEAD, SEALED_OVERHEAD};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Frames read from one TAP, or datagrams from the socket, per turn of the loop: enough to
/// amortise the syscalls, small enough that one busy TAP does not starve the others.
const BATCH: usize = 64;
/// Room for a jumbo frame plus our headers.
const SLOT: usize = HEADROOM + 14 + 9216 + TAILROOM;

const TOKEN_WAKE: u64 = 0;
const TOKEN_SOCKET: u64 = 1;
const TOKEN_TAP_BASE: u64 = 2;

/// How to start a node's dataplane.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// This node's sender id for sealed frames: unique in the cluster.
    pub sender: SenderId,
    /// The overlay socket's address (underlay IP and port 4789 by default).
    pub listen: SocketAddr,
    /// The namespace the socket lives in (`None`: the caller's).
    pub netns: Option<NetnsRef>,
    /// SO_RCVBUF / SO_SNDBUF of the overlay socket.
    pub socket_buffer: usize,
}

impl DataplaneConfig {
    pub fn new(sender: SenderId, listen: SocketAddr) -> DataplaneConfig {
        DataplaneConfig {
            sender,
            listen,
            netns: None,
            socket_buffer: 8 << 20,
        }
    }
}

/// What the shell itself counts, beside the core's [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShellCounters {
    pub tap_frames_read: u64,
    pub tap_write_errors: u64,
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub send_errors: u64,
    /// A verdict named an endpoint whose TAP is not attached (an update raced a detach).
    pub no_tap: u64,
}

/// A snapshot of both sets of counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub core: Counters,
    pub shell: ShellCounters,
}

enum Command {
    Update(Update, mpsc::Sender<Result<(), UpdateError>>),
    Attach(EndpointId, Tap, mpsc::Sender<io::Result<()>>),
    Detach(EndpointId, mpsc::Sender<()>),
    Stats(mpsc::Sender<Stats>),
    Stop,
}

/// A handle to a running dataplane. Dropping it stops the thread and closes every TAP.
#[derive(Debug)]
pub struct Dataplane {
    commands: mpsc::Sender<Command>,
    wake: std::sync::Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
    underlay_mtu: u32,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Update(..) => "Update",
            Command::Attach(..) => "Attach",
            Command::Detach(..) => "Detach",
            Command::Stats(..) => "Stats",
            Command::Stop => "Stop",
        })
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the dataplane thread has stopped",
    )
}

impl Dataplane {
    /// Binds the overlay socket (inside `config.netns`) and starts forwarding.
    pub fn start(config: DataplaneConfig) -> io::Result<Dataplane> {
        let socket =
            OverlaySocket::bind(config.netns.as_ref(), config.listen, config.socket_buffer)?;
        let local_addr = socket.local_addr();
        let underlay_mtu = underlay_mtu(config.netns.as_ref(), local_addr);
        let wake = std::sync::Arc::new(EventFd::from_flags(
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?);
        let (commands, rx) = mpsc::channel();
        let core = Forwarder::new(config.sender, counter_start());
        let mut worker = Worker::new(core, socket, wake.clone(), rx)?;
        let thread = std::thread::Builder::new()
            .name(format!("dataplane-{}", config.sender.0))
            .spawn(move || worker.run())?;
        Ok(Dataplane {
            commands,
            wake,
            thread: Some(thread),
            local_addr,
            underlay_mtu,
        })
    }

    /// The MTU of the underlay interface the overlay socket sends through.
    pub fn underlay_mtu(&self) -> u32 {
        self.underlay_mtu
    }

    /// The MTU of a network's TAPs on this node: the underlay MTU less the encapsulation.
    pub fn overlay_mtu(&self, encrypted: bool) -> u32 {
        let overhead = if encrypted {
            SEALED_OVERHEAD
        } else {
            PLAIN_OVERHEAD
        };
        self.underlay_mtu.saturating_sub(overhead as u32)
    }

    /// The overlay socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn call<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Command) -> io::Result<T> {
        let (tx, rx) = mpsc::channel();
        self.commands.send(make(tx)).map_err(|_| closed())?;
        self.wake.write(1)?;
        rx.recv().map_err(|_| closed())
    }

    /// Applies a table or key update between two batches; returns once it is in force.
    pub fn apply(&self, update: Update) -> io::Result<Result<(), UpdateError>> {
        self.call(|tx| Command::Update(update, tx))
    }

    /// Hands the TAP of endpoint `id` to the forwarding thread.
    pub fn attach_tap(&self, id: EndpointId, tap: Tap) -> io::Result<()> {
        self.call(|tx| Command::Attach(id, tap, tx))?
    }

    /// Creates a TAP in `netns` per `tap`, registers endpoint `id` on network `vni` with the
    /// core, and starts forwarding its frames. Undone by [`Dataplane::remove_endpoint`].
    pub fn add_endpoint(
        &self,
        netns: &NetnsRef,
        id: EndpointId,
        vni: crate::types::Vni,
        tap: &TapConfig,
    ) -> io::Result<()> {
        let device = Tap::create(netns, tap)?;
        let update = Update::AddLocalEndpoint {
            id,
            vni,
            ip: tap.ip,
            mac: tap.mac,
        };
        self.apply(update)?
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.attach_tap(id, device)
    }

    /// Forgets endpoint `id` and closes its TAP (the kernel removes the device).
    pub fn remove_endpoint(&self, id: EndpointId) -> io::Result<()> {
        let _ = self.apply(Update::RemoveLocalEndpoint { id })?;
        self.call(|tx| Command::Detach(id, tx))
    }

    pub fn stats(&self) -> io::Result<Stats> {
        self.call(Command::Stats)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a JSON array of [`Update`]s: the static feed used before the control plane exists.
pub fn load_updates(path: &std::path::Path) -> io::Result<Vec<Update>> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// The MTU of the interface holding the socket's address. A socket bound to the wildcard
/// address has no single interface: then the common Ethernet MTU is assumed, and said.
fn underlay_mtu(netns: Option<&NetnsRef>, local: SocketAddr) -> u32 {
    const ASSUMED: u32 = 1500;
    let std::net::IpAddr::V4(ip) = local.ip() else {
        return ASSUMED;
    };
    if ip.is_unspecified() {
        tracing::warn!("overlay socket bound to {local}: assuming an underlay MTU of {ASSUMED}");
        return ASSUMED;
    }
    match mtu_of_address(netns, ip) {
        Ok(mtu) => mtu,
        Err(e) => {
            tracing::warn!("no underlay MTU for {ip} ({e}): assuming {ASSUMED}");
            ASSUMED
        }
    }
}

/// A transmit counter start that grows across restarts: nanoseconds of wall-clock time.
/// A restarted node that keeps its sender id and key then never reuses a nonce.
#[allow(clippy::disallowed_methods)] // shell: reads the clock
fn counter_start() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The state owned by the forwarding thread.
struct Worker {
    core: Forwarder,
    socket: OverlaySocket,
    taps: BTreeMap<EndpointId, Tap>,
    epoll: Epoll,
    wake: std::sync::Arc<EventFd>,
    commands: mpsc::Receiver<Command>,
    recv: RecvBatch,
    send: SendBatch,
    /// One frame read from a TAP that goes to another TAP (no send slot needed).
    scratch: Vec<u8>,
    shell: ShellCounters,
    origin: Instant,
}

impl Worker {
    #[allow(clippy::disallowed_methods)] // shell: reads the clock
    fn new(
        core: Forwarder,
        socket: OverlaySocket,
        wake: std::sync::Arc<EventFd>,
        commands: mpsc::Receiver<Command>,
    ) -> io::Result<Worker> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            wake.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE),
        )?;
        epoll.add(
            socket.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SOCKET),
        )?;
        Ok(Worker {
            core,
            socket,
            taps: BTreeMap::new(),
            epoll,
            wake,
            commands,
            recv: RecvBatch::new(BATCH, SLOT),
            send: SendBatch::new(BATCH, SLOT),
            scratch: vec![0; SLOT],
            shell: ShellCounters::default(),
            origin: Instant::now(),
        })
    }

    #[allow(clippy::disallowed_methods)] // shell: reads the clock
    fn now(&self) -> Timestamp {
        Timestamp(self.origin.elapsed().as_nanos() as u64)
    }

    fn run(&mut self) {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("dataplane epoll failed, stopping: {e}");
                    return;
                }
            };
            for event in &events[..n] {
                match event.data() {
                    TOKEN_WAKE => {
                        let _ = self.wake.read();
                        if !self.drain_commands() {
                            return;
                        }
                    }
                    TOKEN_SOCKET => self.on_wire_readable(),
                    token => self.on_tap_readable(EndpointId((token - TOKEN_TAP_BASE) as u32)),
                }
            }
        }
    }

    /// Applies queued commands; false once asked to stop.
    fn drain_commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Update(u, reply) => {
                    let _ = reply.send(self.core.handle_update(u));
                }
                Command::Attach(id, tap, reply) => {
                    let token = TOKEN_TAP_BASE + u64::from(id.0);
                    let added = self
                        .epoll
                        .add(tap.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token));
                    let result = added.map_err(io::Error::from).map(|()| {
                        if let Some(old) = self.taps.insert(id, tap) {
                            let _ = self.epoll.delete(old.as_fd());
                        }
                    });
                    let _ = reply.send(result);
                }
                Command::Detach(id, reply) => {
                    if let Some(tap) = self.taps.remove(&id) {
                        let _ = self.epoll.delete(tap.as_fd());
                    }
                    let _ = reply.send(());
                }
                Command::Stats(reply) => {
                    let stats = Stats {
                        core: self.core.counters().clone(),
                        shell: self.shell.clone(),
                    };
                    let _ = reply.send(stats);
                }
                Command::Stop => return false,
            }
        }
        true
    }

    /// Datagrams from other nodes: decapsulate (open) in place and write to the TAPs.
    fn on_wire_readable(&mut self) {
        let now = self.now();
        for _ in 0..4 {
            let n = match self.recv.recv(&self.socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("overlay socket receive failed: {e}");
                    return;
                }
            };
            self.shell.datagrams_received += n as u64;
            for i in 0..n {
                let (from, bytes) = self.recv.get_mut(i);
                let len = bytes.len();
                let from = crate::types::UnderlayAddr(from);
                match self.core.handle_wire_datagram(now, from, bytes, 0..len) {
                    Verdict::ToEndpoint { endpoint, frame } => {
                        write_tap(&self.taps, &mut self.shell, endpoint, &bytes[frame]);
                    }
                    // The wire never sends frames back out: nodes do not relay.
                    Verdict::ToWire { .. } | Verdict::Drop(_) => {}
                }
            }
            if n < BATCH {
                return;
            }
        }
    }

    /// Frames from one TAP: forward locally, or encapsulate into the send batch.
    fn on_tap_readable(&mut self, id: EndpointId) {
        let now = self.now();
        for _ in 0..BATCH {
            let Some(tap) = self.taps.get(&id) else {
                return;
            };
            let Some(slot) = self.send.slot_mut() else {
                self.flush();
                continue;
            };
            let n = match tap.read(&mut slot[HEADROOM..SLOT - TAILROOM]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("reading TAP {} failed: {e}", tap.name());
                    break;
                }
            };
            self.shell.tap_frames_read += 1;
            match self
                .core
                .handle_endpoint_frame(now, id, slot, HEADROOM..HEADROOM + n)
            {
                Verdict::ToWire { dest, datagram } => self.send.commit(datagram, dest.0),
                Verdict::ToEndpoint { endpoint, frame } => {
                    // Copy out so that the slot stays free for the next read.
                    let len = frame.len();
                    self.scratch[..len].copy_from_slice(&slot[frame]);
                    write_tap(&self.taps, &mut self.shell, endpoint, &self.scratch[..len]);
                }
                Verdict::Drop(_) => {}
            }
        }
        self.flush();
    }

    /// Sends what the batch holds. Datagrams the socket could not take yet stay queued for
    /// the next flush; only those the kernel refused are counted as errors.
    fn flush(&mut self) {
        if self.send.is_empty() {
            return;
        }
        let failed_before = self.send.failed();
        match self.send.flush(&self.socket) {
            Ok(sent) => self.shell.datagrams_sent += sent as u64,
            Err(e) => tracing::warn!("overlay socket send failed: {e}"),
        }
        self.shell.send_errors += self.send.failed() - failed_before;
    }
}

fn write_tap(
    taps: &BTreeMap<EndpointId, Tap>,
    counters: &mut ShellCounters,
    id: EndpointId,
    frame: &[u8],
) {
    match taps.get(&id) {
        Some(tap) => {
            if tap.write(frame).is_err() {
                counters.tap_write_errors += 1;
            }
        }
        None => counters.no_tap += 1,
    }
}
