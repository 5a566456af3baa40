//! A running dataplane: one OS thread per node that owns the forwarding core, the overlay
//! socket and every TAP, and moves frames between them with batched I/O.
//!
//! Why one thread and epoll rather than tokio tasks: the core is a plain `&mut` struct; a
//! single owner needs no locks on the packet path, and epoll with batches of recvmmsg /
//! sendmmsg keeps syscalls per packet low. Table and key updates arrive on a channel and
//! are applied between batches, so forwarding never stops for them.

use crate::balance::{BalanceCounters, ConntrackConfig, VipStats};
use crate::forward::{Counters, Forwarder, Update, UpdateError};
use crate::shell::link::mtu_of_address;
use crate::shell::netns::NetnsRef;
use crate::shell::tap::{Tap, TapConfig};
use crate::shell::udp::OverlaySocket;
use crate::shell::worker::Worker;
use crate::types::{EndpointId, SenderId};
use crate::wire::vxlan::{PLAIN_OVERHEAD, SEALED_OVERHEAD};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

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
    /// Open TAPs with TSO and checksum offload (segmenting and coalescing in userspace):
    /// 64 KiB per syscall instead of one frame. On by default.
    pub offload: bool,
    /// After traffic, keep polling without sleeping for this long before blocking: a reply
    /// arriving within it skips a thread wake-up (two per node per round trip otherwise).
    /// Costs CPU only while traffic flows. Zero turns it off.
    pub busy_poll: std::time::Duration,
    /// Limits and idle timeouts of the VIP balancer's flow table.
    pub conntrack: ConntrackConfig,
}

impl DataplaneConfig {
    pub fn new(sender: SenderId, listen: SocketAddr) -> DataplaneConfig {
        DataplaneConfig {
            sender,
            listen,
            netns: None,
            socket_buffer: 8 << 20,
            offload: true,
            busy_poll: std::time::Duration::from_micros(100),
            conntrack: ConntrackConfig::default(),
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
    /// TSO super-frames read from TAPs and cut into segments.
    pub tso_frames: u64,
    /// Super-frames written to TAPs after merging received segments.
    pub coalesced_frames: u64,
    /// Segments that went into those super-frames.
    pub coalesced_segments: u64,
    /// TAP frames whose virtio-net header or offload request could not be honoured.
    pub offload_errors: u64,
    /// Datagrams longer than a receive slot, dropped by the socket batch.
    pub datagrams_truncated: u64,
    /// Datagrams whose source address could not be read (not IPv4/IPv6), dropped.
    pub datagrams_unknown_source: u64,
    /// TAPs that failed (e.g. deleted inside the container) and were detached.
    pub taps_lost: u64,
    /// Frames from a TAP larger than a send slot (the container raised its MTU).
    pub oversized_frames: u64,
    /// Frames dropped because the send batch stayed full (the socket could take no more).
    pub send_backlog_drops: u64,
}

/// A snapshot of both sets of counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub core: Counters,
    pub shell: ShellCounters,
    /// What the VIP balancer did, its flow-table size, and each VIP's backends with their
    /// open and total flows.
    pub balance: BalanceCounters,
    pub conntrack_entries: usize,
    pub vips: Vec<VipStats>,
}

pub(crate) enum Command {
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
    offload: bool,
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
        let core = Forwarder::with_conntrack(config.sender, counter_start(), config.conntrack);
        let mut worker = Worker::new(
            core,
            socket,
            wake.clone(),
            rx,
            config.offload,
            config.busy_poll,
        )?;
        let thread = std::thread::Builder::new()
            .name(format!("dataplane-{}", config.sender.0))
            .spawn(move || worker.run())?;
        Ok(Dataplane {
            commands,
            wake,
            thread: Some(thread),
            local_addr,
            underlay_mtu,
            offload: config.offload,
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
        let device = if self.offload {
            Tap::create_offloaded(netns, tap)?
        } else {
            Tap::create(netns, tap)?
        };
        let update = Update::AddLocalEndpoint {
            id,
            vni,
            ip: tap.ip,
            mac: tap.mac,
        };
        self.apply(update)?
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // All or nothing: a TAP the thread cannot watch leaves no endpoint behind.
        self.attach_tap(id, device).inspect_err(|_| {
            let _ = self.apply(Update::RemoveLocalEndpoint { id });
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_json_file_of_updates_loads_and_a_bad_one_names_the_file() {
        /// Removes the test's folder also when an assertion fails.
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!("shoal-updates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = Cleanup(dir.clone());
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            r#"[
              {"op": "add_network", "vni": 4096, "subnet": "10.10.0.0/24",
               "gateway": "10.10.0.1", "mtu": 1450, "encrypted": false},
              {"op": "add_remote_endpoint", "vni": 4096, "ip": "10.10.0.4",
               "mac": [2, 66, 10, 10, 0, 4], "node": "192.168.77.2:4789"}
            ]"#,
        )
        .unwrap();
        let updates = load_updates(&good).unwrap();
        assert_eq!(updates.len(), 2);
        let mut core = Forwarder::new(SenderId(1), 0);
        for u in updates {
            core.handle_update(u).unwrap();
        }
        let vni = crate::types::Vni::new(4096).unwrap();
        assert!(core.tables().network(vni).is_some());

        let bad = dir.join("bad.json");
        let too_big = r#"[{"op": "add_network", "vni": 99999999, "subnet": "10.0.0.0/24",
            "gateway": null, "mtu": 1450, "encrypted": false}]"#;
        std::fs::write(&bad, too_big).unwrap();
        let err = load_updates(&bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("bad.json"), "{err}");
        assert!(err.to_string().contains("24 bits"), "{err}");
    }
}
