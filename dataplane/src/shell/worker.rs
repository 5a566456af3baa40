//! The forwarding thread of a node: epoll over the overlay socket, every TAP and a wake-up
//! eventfd; frames go through the core in batches, updates are applied between batches.

use crate::forward::{Forwarder, HEADROOM, TAILROOM, Verdict};
use crate::shell::egress::Egress;
use crate::shell::runtime::{Command, Stats};
use crate::shell::udp::{GRO_SLOT_SIZE, OverlaySocket, RecvBatch, SendBatch};
use crate::types::{EndpointId, Timestamp, UnderlayAddr};
use crate::wire::offload::{TcpSegmenter, VNET_HDR_LEN, VnetHdr, complete_checksum};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, mpsc};
use std::time::Instant;

/// Frames read from one TAP, or datagram batches from the socket, per turn of the loop:
/// enough to amortise the syscalls, small enough that one busy TAP does not starve others.
const BATCH: usize = 64;
/// One datagram or one wire-sized frame plus our headers (jumbo frames included).
const SLOT: usize = HEADROOM + 14 + 9216 + TAILROOM;
/// One TAP read: a virtio-net header and a TSO frame of up to 64 KiB.
const TAP_READ: usize = VNET_HDR_LEN + 14 + 65535;

const TOKEN_WAKE: u64 = 0;
const TOKEN_SOCKET: u64 = 1;
const TOKEN_TAP_BASE: u64 = 2;

/// The state owned by the forwarding thread.
pub(crate) struct Worker {
    core: Forwarder,
    socket: OverlaySocket,
    egress: Egress,
    epoll: Epoll,
    wake: Arc<EventFd>,
    commands: mpsc::Receiver<Command>,
    recv: RecvBatch,
    send: SendBatch,
    /// Where TAP reads land before their frames are placed (or segmented) into send slots.
    tap_buf: Box<[u8]>,
    /// A frame for another local TAP, copied out of its send slot.
    scratch: Box<[u8]>,
    origin: Instant,
    /// When idle balanced flows were last expired.
    last_expiry: Timestamp,
    /// How long to keep polling without sleeping after an event (see `DataplaneConfig`).
    busy_poll: std::time::Duration,
}

impl Worker {
    #[allow(clippy::disallowed_methods)] // shell: reads the clock
    pub(crate) fn new(
        core: Forwarder,
        socket: OverlaySocket,
        wake: Arc<EventFd>,
        commands: mpsc::Receiver<Command>,
        offload: bool,
        busy_poll: std::time::Duration,
    ) -> io::Result<Worker> {
        // With offload the socket also batches in the kernel: UDP GSO sends runs of equal
        // datagrams as one message, UDP GRO hands over merged ones (split again by RecvBatch).
        let recv_slot = if offload {
            socket.set_gro(true)?;
            GRO_SLOT_SIZE
        } else {
            SLOT
        };
        let mut send = SendBatch::new(BATCH, SLOT);
        send.set_gso(offload);
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
            egress: Egress::default(),
            epoll,
            wake,
            commands,
            recv: RecvBatch::new(BATCH, recv_slot),
            send,
            tap_buf: vec![0; TAP_READ].into_boxed_slice(),
            scratch: vec![0; SLOT].into_boxed_slice(),
            origin: Instant::now(),
            last_expiry: Timestamp(0),
            busy_poll,
        })
    }

    #[allow(clippy::disallowed_methods)] // shell: reads the clock
    fn now(&self) -> Timestamp {
        Timestamp(self.origin.elapsed().as_nanos() as u64)
    }

    #[allow(clippy::disallowed_methods)] // shell: reads the clock for the spin budget
    pub(crate) fn run(&mut self) {
        let mut events = [EpollEvent::empty(); 64];
        let spin = self.busy_poll;
        let mut last_event: Option<Instant> = None;
        loop {
            let spinning = last_event.is_some_and(|t| t.elapsed() < spin);
            let timeout = if spinning {
                EpollTimeout::ZERO
            } else {
                EpollTimeout::from(1000u16)
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(0) if spinning => {
                    std::hint::spin_loop();
                    continue;
                }
                Ok(n) => {
                    last_event = (n > 0).then(Instant::now);
                    n
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("dataplane epoll failed, stopping: {e}");
                    return;
                }
            };
            self.expire_flows();
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

    /// About once a second (the epoll wait wakes at least that often), idle balanced flows go.
    fn expire_flows(&mut self) {
        let now = self.now();
        if now.saturating_sub_nanos(self.last_expiry) >= 1_000_000_000 {
            self.core.expire(now);
            self.last_expiry = now;
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
                    let event = EpollEvent::new(EpollFlags::EPOLLIN, token);
                    let result = self.epoll.add(tap.as_fd(), event).map_err(io::Error::from);
                    if result.is_ok()
                        && let Some(old) = self.egress.taps.insert(id, tap)
                    {
                        let _ = self.epoll.delete(old.as_fd());
                    }
                    let _ = reply.send(result);
                }
                Command::Detach(id, reply) => {
                    self.detach_tap(id);
                    let _ = reply.send(());
                }
                Command::Stats(reply) => {
                    let core = self.core.counters().clone();
                    let mut shell = self.egress.counters.clone();
                    shell.datagrams_truncated = self.recv.truncated();
                    shell.datagrams_unknown_source = self.recv.unknown_source();
                    let balancer = self.core.tables().balancer();
                    let _ = reply.send(Stats {
                        core,
                        shell,
                        balance: balancer.counters(),
                        conntrack_entries: balancer.conntrack_len(),
                        vips: balancer.stats(),
                    });
                }
                Command::Stop => return false,
            }
        }
        true
    }

    /// Stops reading endpoint `id`'s TAP and closes it, after writing out what is held for it.
    fn detach_tap(&mut self, id: EndpointId) {
        self.egress.flush();
        if let Some(tap) = self.egress.taps.remove(&id) {
            let _ = self.epoll.delete(tap.as_fd());
        }
    }

    /// Datagrams from other nodes: decapsulate (open) in place, deliver to the TAPs.
    fn on_wire_readable(&mut self) {
        let now = self.now();
        for _ in 0..4 {
            let n = match self.recv.recv(&self.socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("overlay socket receive failed: {e}");
                    break;
                }
            };
            self.egress.counters.datagrams_received += n as u64;
            for i in 0..n {
                let (from, bytes) = self.recv.get_mut(i);
                let len = bytes.len();
                match self
                    .core
                    .handle_wire_datagram(now, UnderlayAddr(from), bytes, 0..len)
                {
                    Verdict::ToEndpoint { endpoint, frame } => {
                        self.egress.deliver(endpoint, &bytes[frame]);
                    }
                    // Nodes never relay: nothing from the wire goes back out.
                    Verdict::ToWire { .. } | Verdict::Drop(_) => {}
                }
            }
            if n < BATCH {
                break;
            }
        }
        self.egress.flush();
    }

    /// Frames from one TAP: TSO frames are cut into wire-sized segments first; each frame
    /// is then forwarded locally or encapsulated into the send batch.
    fn on_tap_readable(&mut self, id: EndpointId) {
        let now = self.now();
        // Taken out of `self` for the loop, so frames can be read from it while the core
        // and the batches are borrowed mutably.
        let mut buf = std::mem::take(&mut self.tap_buf);
        for _ in 0..BATCH {
            let Some(tap) = self.egress.taps.get(&id) else {
                break;
            };
            let vnet_hdr = tap.has_vnet_hdr();
            let n = match tap.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The device is gone (deleted inside the container) or broken: a
                    // level-triggered epoll would report it forever. Let it go, once.
                    tracing::warn!(
                        "TAP {} of endpoint {id:?} failed ({e}): detaching it",
                        tap.name()
                    );
                    self.detach_tap(id);
                    self.egress.counters.taps_lost += 1;
                    break;
                }
            };
            self.egress.counters.tap_frames_read += 1;
            let (hdr, frame) = if vnet_hdr {
                match VnetHdr::parse(&buf[..n]) {
                    Some(hdr) => (hdr, &mut buf[VNET_HDR_LEN..n]),
                    None => {
                        self.egress.counters.offload_errors += 1;
                        continue;
                    }
                }
            } else {
                (VnetHdr::default(), &mut buf[..n])
            };
            if hdr.gso() != VnetHdr::GSO_NONE {
                self.segment_and_forward(now, id, frame, &hdr);
            } else if frame.len() > SLOT - HEADROOM - TAILROOM {
                // The container raised its MTU past what a slot holds: refuse, never overrun.
                self.egress.counters.oversized_frames += 1;
            } else if complete_checksum(frame, &hdr).is_ok() {
                if let Some(slot) = self.free_slot() {
                    slot[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
                    self.forward(now, id, frame.len());
                }
            } else {
                self.egress.counters.offload_errors += 1;
            }
        }
        self.tap_buf = buf;
        self.flush_send();
        self.egress.flush();
    }

    fn segment_and_forward(&mut self, now: Timestamp, id: EndpointId, frame: &[u8], hdr: &VnetHdr) {
        let mut segments = match TcpSegmenter::new(frame, hdr) {
            Ok(s) => s,
            Err(_) => {
                self.egress.counters.offload_errors += 1;
                return;
            }
        };
        if segments.max_segment_len() > SLOT - HEADROOM - TAILROOM {
            self.egress.counters.oversized_frames += 1;
            return;
        }
        self.egress.counters.tso_frames += 1;
        loop {
            let Some(slot) = self.free_slot() else { return };
            let Some(len) = segments.next_into(&mut slot[HEADROOM..SLOT - TAILROOM]) else {
                return;
            };
            self.forward(now, id, len);
        }
    }

    /// The next free send slot, flushing the batch if it is full. `None` (counted) when the
    /// socket takes nothing: the frame is dropped rather than the thread blocked.
    fn free_slot(&mut self) -> Option<&mut [u8]> {
        if self.send.is_full() {
            self.flush_send();
        }
        if self.send.is_full() {
            self.egress.counters.send_backlog_drops += 1;
            return None;
        }
        self.send.slot_mut()
    }

    /// Runs the core on the frame at `HEADROOM..HEADROOM + len` of the next free send slot.
    fn forward(&mut self, now: Timestamp, id: EndpointId, len: usize) {
        let Some(slot) = self.send.slot_mut() else {
            return;
        };
        match self
            .core
            .handle_endpoint_frame(now, id, slot, HEADROOM..HEADROOM + len)
        {
            Verdict::ToWire { dest, datagram } => self.send.commit(datagram, dest.0),
            Verdict::ToEndpoint { endpoint, frame } => {
                // Copied out so that the slot stays free for the next frame.
                let n = frame.len();
                self.scratch[..n].copy_from_slice(&slot[frame]);
                self.egress.deliver(endpoint, &self.scratch[..n]);
            }
            Verdict::Drop(_) => {}
        }
    }

    /// Sends what the batch holds. Datagrams the socket could not take yet stay queued for
    /// the next flush; only those the kernel refused are counted as errors.
    fn flush_send(&mut self) {
        if self.send.is_empty() {
            return;
        }
        let failed_before = self.send.failed();
        match self.send.flush(&self.socket) {
            Ok(sent) => self.egress.counters.datagrams_sent += sent as u64,
            Err(e) => tracing::warn!("overlay socket send failed: {e}"),
        }
        self.egress.counters.send_errors += self.send.failed() - failed_before;
    }
}
