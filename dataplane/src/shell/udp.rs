//! The overlay UDP socket (4789) and batched I/O on it (`recvmmsg`/`sendmmsg`).
//!
//! [`RecvBatch`] and [`SendBatch`] own all their buffers and headers, allocated once; a call
//! allocates nothing. Received bytes are mutable (the receiver opens sealed frames in place);
//! send slots are whole, so a caller can write a frame at an offset (headroom for the VXLAN
//! header, tailroom for the AEAD tag) and commit only the datagram's range.
//!
//! UDP GRO is opt-in ([`OverlaySocket::set_gro`]): [`RecvBatch`] then splits each coalesced
//! message into its datagrams using the `UDP_GRO` control message, so callers always see one
//! datagram per index. With GRO on, give the batch slots of [`GRO_SLOT_SIZE`] bytes. UDP GSO
//! (sending) is not used yet.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::netns::{NetnsRef, in_netns};

/// Slot size that holds any coalesced GRO message (the largest UDP payload).
pub const GRO_SLOT_SIZE: usize = 65_535;

/// At most this many datagrams are coalesced into one GRO message (the kernel's
/// `UDP_GRO_CNT_MAX`).
const MAX_GRO_SEGMENTS: usize = 64;

/// Room for one `cmsghdr` carrying an `int` (the `UDP_GRO` segment size), with slack.
const CMSG_BUF_WORDS: usize = 8; // 64 bytes, u64-aligned

/// How long [`SendBatch::flush`] waits in total for the socket to become writable again before
/// it returns with datagrams still queued: `FLUSH_POLLS` polls of `FLUSH_POLL_MS`.
const FLUSH_POLLS: u32 = 20;
const FLUSH_POLL_MS: libc::c_int = 5;

/// The node's overlay UDP socket: non-blocking, big buffers, bound in a chosen namespace.
#[derive(Debug)]
pub struct OverlaySocket {
    sock: UdpSocket,
    local: SocketAddr,
}

impl OverlaySocket {
    /// Binds `addr` inside `ns` (or in the calling thread's namespace when `None`), sets
    /// `SO_RCVBUF`/`SO_SNDBUF` to `buffer_bytes` (the `FORCE` variants first, which ignore
    /// `rmem_max`/`wmem_max` but need CAP_NET_ADMIN; `0` leaves the defaults), non-blocking.
    pub fn bind(
        ns: Option<&NetnsRef>,
        addr: SocketAddr,
        buffer_bytes: usize,
    ) -> io::Result<OverlaySocket> {
        let make = move || -> io::Result<UdpSocket> {
            let sock = Socket::new(
                Domain::for_address(addr),
                Type::DGRAM.nonblocking().cloexec(),
                Some(Protocol::UDP),
            )?;
            if buffer_bytes > 0 {
                set_buffer(&sock, libc::SO_RCVBUFFORCE, buffer_bytes)
                    .or_else(|_| sock.set_recv_buffer_size(buffer_bytes))?;
                set_buffer(&sock, libc::SO_SNDBUFFORCE, buffer_bytes)
                    .or_else(|_| sock.set_send_buffer_size(buffer_bytes))?;
            }
            sock.bind(&addr.into())
                .map_err(|e| io::Error::new(e.kind(), format!("bind udp {addr}: {e}")))?;
            Ok(sock.into())
        };
        let sock = match ns {
            Some(ns) => in_netns(ns, make)?,
            None => make()?,
        };
        let local = sock.local_addr()?;
        Ok(OverlaySocket { sock, local })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The std socket, e.g. for single `send_to`/`recv_from` calls or for registering the fd
    /// with an event loop.
    pub fn as_std(&self) -> &UdpSocket {
        &self.sock
    }

    /// Sends one datagram (non-blocking: `WouldBlock` when the send buffer is full).
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, dest)
    }

    /// Receives one datagram (non-blocking: `WouldBlock` when none). With GRO on this may be
    /// several coalesced datagrams; use [`RecvBatch`] then.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf)
    }

    /// Turns UDP GRO on or off. On: the kernel may hand over up to 64 same-size datagrams
    /// from one source as one message; [`RecvBatch`] splits them, but its slots must then be
    /// [`GRO_SLOT_SIZE`] bytes or the coalesced message is truncated (and dropped).
    pub fn set_gro(&self, on: bool) -> io::Result<()> {
        setsockopt_int(
            self.sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            libc::c_int::from(on),
        )
    }

    /// The kernel's receive buffer size (twice what was asked, as the kernel accounts it).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        socket2::SockRef::from(&self.sock).recv_buffer_size()
    }

    /// The kernel's send buffer size.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        socket2::SockRef::from(&self.sock).send_buffer_size()
    }

    /// Waits up to `timeout_ms` for the socket to become readable (`Ok(false)` on timeout).
    /// For simple loops and tests; an event loop registers the fd instead.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        poll_fd(self.sock.as_raw_fd(), libc::POLLIN, timeout_ms)
    }
}

impl AsRawFd for OverlaySocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for OverlaySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn set_buffer(sock: &Socket, opt: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, opt, v)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` is a live c_int and we pass its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `poll` on one fd; `Ok(true)` when an event in `events` (or an error/hangup) is pending.
fn poll_fd(fd: RawFd, events: libc::c_short, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// socket addresses

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
    unsafe { mem::zeroed() }
}

/// Writes `addr` into `out` as a `sockaddr_in`/`sockaddr_in6`; returns its length.
fn encode_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads an IPv4 or IPv6 socket address; `None` for any other family or a short length.
fn decode_sockaddr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, fully written (len).
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, fully written (len).
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The `UDP_GRO` segment size in a received control buffer, if there is one.
fn gro_segment_size(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: `hdr` is the msghdr the kernel just filled: msg_control points at our control
    // buffer and msg_controllen says how much of it is valid; CMSG_* walk within that.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == libc::UDP_GRO {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let v = std::ptr::read_unaligned(data);
                return usize::try_from(v).ok().filter(|&v| v > 0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Splits a message of `len` bytes received with GRO segment size `seg` into datagram ranges
/// (all `seg` long but the last, which may be shorter).
fn split_segments(len: usize, seg: Option<usize>) -> impl Iterator<Item = Range<usize>> {
    let step = match seg {
        Some(s) if s > 0 && s < len => s,
        _ => len.max(1),
    };
    (0..len)
        .step_by(step)
        .map(move |start| start..(start + step).min(len))
}

// ---------------------------------------------------------------------------------------------
// receiving

/// One received datagram: where it came from and where its bytes are.
#[derive(Clone, Copy, Debug)]
struct Datagram {
    src: SocketAddr,
    start: usize,
    len: usize,
}

/// Preallocated `recvmmsg` state: `n` slots of `slot_size` bytes.
///
/// ```
/// # use dataplane::shell::udp::{OverlaySocket, RecvBatch};
/// # fn main() -> std::io::Result<()> {
/// let sock = OverlaySocket::bind(None, "127.0.0.1:0".parse().unwrap(), 0)?;
/// sock.send_to(b"hello", sock.local_addr())?;
/// assert!(sock.wait_readable(1000)?);
/// let mut rx = RecvBatch::new(64, 2048);
/// let k = rx.recv(&sock)?; // WouldBlock when nothing is queued
/// for i in 0..k {
///     let (src, bytes) = rx.get_mut(i);
///     assert_eq!((src, &*bytes), (sock.local_addr(), &b"hello"[..]));
/// }
/// # Ok(()) }
/// ```
pub struct RecvBatch {
    slot_size: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    ctrl: Vec<u64>,
    hdrs: Vec<libc::mmsghdr>,
    received: Vec<Datagram>,
    truncated: u64,
    unknown_source: u64,
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` only ever point into this struct's own heap
// buffers (`bufs`, `addrs`, `iovs`, `ctrl`); they are rewritten before every syscall and never
// dereferenced otherwise, so moving the batch to another thread is sound.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.hdrs.len())
            .field("slot_size", &self.slot_size)
            .field("received", &self.received.len())
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBatch {
    /// `n` slots (at least 1, at most 1024) of `slot_size` bytes (at least 1).
    pub fn new(n: usize, slot_size: usize) -> RecvBatch {
        let n = n.clamp(1, 1024);
        let slot_size = slot_size.max(1);
        RecvBatch {
            slot_size,
            bufs: vec![0; n * slot_size],
            addrs: vec![zeroed_storage(); n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            ctrl: vec![0; n * CMSG_BUF_WORDS],
            // SAFETY: mmsghdr is plain old data; zero is a valid (empty) value.
            hdrs: vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; n],
            received: Vec::with_capacity(n * MAX_GRO_SEGMENTS),
            truncated: 0,
            unknown_source: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Receives what is queued, up to the number of slots, without blocking. Returns the number
    /// of datagrams now readable with [`get_mut`](Self::get_mut) (GRO messages already split).
    /// `WouldBlock` when nothing was queued. `Ok(0)` can happen when everything received was
    /// dropped (truncated: larger than a slot; or from a non-IP source) — call again.
    pub fn recv(&mut self, sock: &OverlaySocket) -> io::Result<usize> {
        self.received.clear();
        let n = self.hdrs.len();
        let bufs = self.bufs.as_mut_ptr();
        let ctrl = self.ctrl.as_mut_ptr();
        for i in 0..n {
            // SAFETY (pointer arithmetic): i < n, so both offsets stay inside their buffers.
            self.iovs[i] = libc::iovec {
                iov_base: unsafe { bufs.add(i * self.slot_size) }.cast(),
                iov_len: self.slot_size,
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = unsafe { ctrl.add(i * CMSG_BUF_WORDS) }.cast();
            h.msg_hdr.msg_controllen = CMSG_BUF_WORDS * mem::size_of::<u64>();
            h.msg_hdr.msg_flags = 0;
        }
        let got = loop {
            // SAFETY: `hdrs` holds n initialised mmsghdrs whose pointers target live buffers of
            // the stated sizes owned by `self`, which stays borrowed for the call.
            let rc = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for i in 0..got {
            let h = &self.hdrs[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
                continue;
            }
            let Some(src) = decode_sockaddr(&self.addrs[i], h.msg_hdr.msg_namelen) else {
                self.unknown_source += 1;
                continue;
            };
            let len = (h.msg_len as usize).min(self.slot_size);
            let base = i * self.slot_size;
            for r in split_segments(len, gro_segment_size(&h.msg_hdr)) {
                self.received.push(Datagram {
                    src,
                    start: base + r.start,
                    len: r.len(),
                });
            }
        }
        Ok(self.received.len())
    }

    /// Number of datagrams from the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.received.len()
    }

    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// Datagram `i` of the last receive: its source and its bytes (mutable, to open in place).
    /// Panics if `i >= self.len()`.
    pub fn get_mut(&mut self, i: usize) -> (SocketAddr, &mut [u8]) {
        let d = self.received[i];
        (d.src, &mut self.bufs[d.start..d.start + d.len])
    }

    /// Datagram `i` of the last receive, read-only. Panics if `i >= self.len()`.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let d = self.received[i];
        (d.src, &self.bufs[d.start..d.start + d.len])
    }

    /// Datagrams dropped so far because they did not fit in a slot.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Datagrams dropped so far because their source was not an IPv4/IPv6 address.
    pub fn unknown_source(&self) -> u64 {
        self.unknown_source
    }
}

// ---------------------------------------------------------------------------------------------
// sending

/// Preallocated `sendmmsg` state: `n` slots of `slot_size` bytes.
///
/// Fill the next free slot from [`slot_mut`](Self::slot_mut) (e.g. a frame at offset 24, its
/// VXLAN header before it), then [`commit`](Self::commit) the datagram's byte range and its
/// destination. [`flush`](Self::flush) sends everything queued.
pub struct SendBatch {
    slot_size: usize,
    bufs: Vec<u8>,
    queued: Vec<(usize, usize, SocketAddr)>, // (start, end) within the slot, dest
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// One `UDP_SEGMENT` control message per sendmmsg entry (u64s keep cmsghdr alignment).
    cmsgs: Vec<[u64; 4]>,
    /// Datagrams carried by each sendmmsg entry of the call being made.
    runs: Vec<usize>,
    /// GSO messages (runs of two or more) the kernel took, over the batch's life.
    gso_messages: u64,
    /// Merge runs of equal-size datagrams to one destination into UDP GSO messages.
    gso: bool,
    sent: u64,
    failed: u64,
    last_error: Option<io::Error>,
}

/// At most this many datagrams in one GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels, 128 on newer ones).
const GSO_MAX_SEGMENTS: usize = 64;
/// At most this many payload bytes in one GSO message (one IPv4 datagram's worth).
const GSO_MAX_BYTES: usize = 65_507;

// SAFETY: as for RecvBatch, the raw pointers in `iovs`/`hdrs` point only into this struct's own
// heap buffers and are rewritten before every syscall.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("slots", &self.hdrs.len())
            .field("slot_size", &self.slot_size)
            .field("queued", &self.queued.len())
            .field("sent", &self.sent)
            .field("failed", &self.failed)
            .finish()
    }
}

impl SendBatch {
    /// `n` slots (at least 1, at most 1024) of `slot_size` bytes (at least 1).
    pub fn new(n: usize, slot_size: usize) -> SendBatch {
        let n = n.clamp(1, 1024);
        let slot_size = slot_size.max(1);
        SendBatch {
            slot_size,
            bufs: vec![0; n * slot_size],
            queued: Vec::with_capacity(n),
            addrs: vec![zeroed_storage(); n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            // SAFETY: mmsghdr is plain old data; zero is a valid (empty) value.
            hdrs: vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; n],
            cmsgs: vec![[0u64; 4]; n],
            runs: vec![0; n],
            gso_messages: 0,
            gso: false,
            sent: 0,
            failed: 0,
            last_error: None,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Sends consecutive datagrams of one size to one destination as one UDP GSO message
    /// (`UDP_SEGMENT`): one trip through the kernel's stack instead of one per datagram. The
    /// wire is unchanged: the kernel (or the NIC) cuts the message into the same datagrams.
    /// Turned off again by itself if the kernel refuses GSO.
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    pub fn gso(&self) -> bool {
        self.gso
    }

    /// GSO messages (runs of two or more datagrams) the kernel took.
    pub fn gso_messages(&self) -> u64 {
        self.gso_messages
    }

    /// Datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.queued.len() == self.hdrs.len()
    }

    /// The whole next free slot (`slot_size` bytes, contents left over from earlier use), or
    /// `None` when every slot is queued: flush first.
    pub fn slot_mut(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.queued.len() * self.slot_size;
        Some(&mut self.bufs[start..start + self.slot_size])
    }

    /// Queues bytes `range` of the slot last returned by [`slot_mut`](Self::slot_mut) as one
    /// datagram to `dest`. Panics if the batch is full or `range` is not inside a slot
    /// (programming errors).
    pub fn commit(&mut self, range: Range<usize>, dest: SocketAddr) {
        assert!(!self.is_full(), "SendBatch::commit on a full batch");
        assert!(
            range.start <= range.end && range.end <= self.slot_size,
            "SendBatch::commit: range {range:?} outside a {}-byte slot",
            self.slot_size
        );
        self.queued.push((range.start, range.end, dest));
    }

    /// Copies `datagram` into the next slot and queues it; `false` (nothing queued) when the
    /// batch is full or the datagram is larger than a slot.
    pub fn push(&mut self, datagram: &[u8], dest: SocketAddr) -> bool {
        let len = datagram.len();
        match self.slot_mut() {
            Some(slot) if len <= slot.len() => {
                slot[..len].copy_from_slice(datagram);
                self.commit(0..len, dest);
                true
            }
            _ => false,
        }
    }

    /// Drops everything queued without sending.
    pub fn clear(&mut self) {
        self.queued.clear();
    }

    /// Sends everything queued with `sendmmsg`, in order. Returns how many datagrams the kernel
    /// took in this call.
    ///
    /// - Socket full (`EAGAIN`): waits for writability (up to ~100 ms in all) and retries. If
    ///   it stays full, returns `Ok(sent)` with the rest still queued ([`len`](Self::len) > 0,
    ///   moved to the front); nothing is silently dropped.
    /// - A datagram the kernel refuses on its own (`EMSGSIZE`, `ENETUNREACH`, `EACCES`, ...):
    ///   dropped, counted in [`failed`](Self::failed), its error kept in
    ///   [`take_last_error`](Self::take_last_error); the rest are still sent.
    /// - The socket itself is unusable (`EBADF`, `ENOTSOCK`, `EFAULT`): `Err`, nothing more is
    ///   sent, the unsent datagrams stay queued.
    pub fn flush(&mut self, sock: &OverlaySocket) -> io::Result<usize> {
        let total = self.queued.len();
        let mut head = 0;
        let mut sent = 0;
        let mut polls = 0;
        let mut result = Ok(());
        while head < total {
            let count = self.prepare(head, total);
            // SAFETY: the first `count` mmsghdrs are initialised and point at live buffers of
            // the stated sizes owned by `self`.
            let rc = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let taken = &self.runs[..rc as usize];
                let datagrams: usize = taken.iter().sum();
                self.gso_messages += taken.iter().filter(|&&r| r > 1).count() as u64;
                head += datagrams;
                sent += datagrams;
                continue;
            }
            let e = if rc == 0 {
                io::Error::from(io::ErrorKind::WriteZero)
            } else {
                io::Error::last_os_error()
            };
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    if polls >= FLUSH_POLLS {
                        break;
                    }
                    polls += 1;
                    if let Err(pe) = poll_fd(sock.as_raw_fd(), libc::POLLOUT, FLUSH_POLL_MS) {
                        result = Err(pe);
                        break;
                    }
                }
                Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) => {
                    result = Err(e);
                    break;
                }
                Some(libc::EINVAL) | Some(libc::EIO) if self.runs[0] > 1 => {
                    // This kernel or device will not segment: send datagram by datagram.
                    tracing::warn!("UDP GSO refused ({e}); sending without it");
                    self.gso = false;
                }
                _ => {
                    // sendmmsg fails only when the first entry fails: drop its datagrams.
                    head += self.runs[0];
                    self.failed += self.runs[0] as u64;
                    self.last_error = Some(e);
                }
            }
        }
        self.sent += sent as u64;
        self.requeue_from(head);
        result.map(|()| sent)
    }

    /// Fills the sendmmsg entries for datagrams `head..total`: one entry per datagram, or per
    /// GSO run (equal sizes to one destination, only the last may be shorter). Returns the
    /// number of entries; `self.runs[k]` says how many datagrams entry `k` carries.
    fn prepare(&mut self, head: usize, total: usize) -> usize {
        let bufs = self.bufs.as_mut_ptr();
        let (mut i, mut entries) = (head, 0);
        while i < total {
            let (start, end, dest) = self.queued[i];
            let size = end - start;
            let mut run = 1;
            while self.gso
                && size > 0
                && i + run < total
                && run < GSO_MAX_SEGMENTS
                && (run + 1) * size <= GSO_MAX_BYTES
            {
                let (s2, e2, d2) = self.queued[i + run];
                if d2 != dest || e2 - s2 > size || e2 == s2 {
                    break;
                }
                run += 1;
                if e2 - s2 < size {
                    break; // a shorter datagram ends a run
                }
            }
            for j in 0..run {
                let (s, e, _) = self.queued[i + j];
                self.iovs[i - head + j] = libc::iovec {
                    // SAFETY (pointer arithmetic): i + j < n and s <= e <= slot_size, so the
                    // pointer stays inside `bufs`.
                    iov_base: unsafe { bufs.add((i + j) * self.slot_size + s) }.cast(),
                    iov_len: e - s,
                };
            }
            let namelen = encode_sockaddr(&dest, &mut self.addrs[entries]);
            let h = &mut self.hdrs[entries];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.addrs[entries] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut self.iovs[i - head];
            h.msg_hdr.msg_iovlen = run;
            h.msg_hdr.msg_flags = 0;
            if run > 1 {
                let control = &mut self.cmsgs[entries];
                // SAFETY: `control` is 32 bytes, 8-aligned, enough for CMSG_SPACE(2); the
                // cmsg macros only compute offsets within it.
                unsafe {
                    let space = libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize;
                    h.msg_hdr.msg_control = control.as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = space;
                    let cmsg = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
                    libc::CMSG_DATA(cmsg)
                        .cast::<u16>()
                        .write_unaligned(size as u16);
                }
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
            self.runs[entries] = run;
            entries += 1;
            i += run;
        }
        entries
    }

    /// Keeps datagrams `head..` queued, moved to the front slots.
    fn requeue_from(&mut self, head: usize) {
        if head == 0 {
            return;
        }
        let remaining = self.queued.len() - head;
        for k in 0..remaining {
            let from = (head + k) * self.slot_size;
            self.bufs
                .copy_within(from..from + self.slot_size, k * self.slot_size);
        }
        self.queued.drain(..head);
    }

    /// Datagrams the kernel took, over the batch's life.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Datagrams dropped because the kernel refused them individually, over the batch's life.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// The error of the last datagram dropped by [`flush`](Self::flush), if any since the last
    /// call.
    pub fn take_last_error(&mut self) -> Option<io::Error> {
        self.last_error.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> OverlaySocket {
        OverlaySocket::bind(None, "127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap()
    }

    fn recv_all(
        rx: &mut RecvBatch,
        sock: &OverlaySocket,
        want: usize,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..200 {
            if out.len() >= want {
                break;
            }
            match rx.recv(sock) {
                Ok(k) => {
                    for i in 0..k {
                        let (src, b) = rx.get(i);
                        out.push((src, b.to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sock.wait_readable(20).unwrap();
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        out
    }

    #[test]
    fn sockaddr_roundtrip() {
        for s in [
            "10.1.2.3:4789",
            "[fe80::1%3]:9",
            "[2001:db8::7]:65535",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = s.parse().unwrap();
            let mut st = zeroed_storage();
            let len = encode_sockaddr(&a, &mut st);
            assert_eq!(decode_sockaddr(&st, len), Some(a), "{s}");
            assert_eq!(decode_sockaddr(&st, len - 1), None);
        }
        assert_eq!(decode_sockaddr(&zeroed_storage(), 128), None);
    }

    #[test]
    fn segments() {
        let v: Vec<_> = split_segments(250, Some(100)).collect();
        assert_eq!(v, vec![0..100, 100..200, 200..250]);
        let v: Vec<_> = split_segments(200, Some(100)).collect();
        assert_eq!(v, vec![0..100, 100..200]);
        assert_eq!(
            split_segments(80, Some(100)).collect::<Vec<_>>(),
            vec![0..80]
        );
        assert_eq!(split_segments(80, None).collect::<Vec<_>>(), vec![0..80]);
        assert_eq!(split_segments(80, Some(0)).collect::<Vec<_>>(), vec![0..80]);
        assert_eq!(split_segments(0, None).count(), 0);
    }

    #[test]
    fn slots_commit_and_push() {
        let mut b = SendBatch::new(2, 64);
        assert_eq!(b.slot_mut().unwrap().len(), 64);
        b.slot_mut().unwrap()[24..27].copy_from_slice(b"abc");
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        b.commit(24..27, dest);
        assert!(b.push(b"xyz", dest));
        assert!(b.is_full());
        assert!(b.slot_mut().is_none());
        assert!(!b.push(b"q", dest));
        b.clear();
        assert!(!b.push(&[0; 65], dest));
        assert!(b.is_empty());
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn commit_outside_slot_panics() {
        let mut b = SendBatch::new(1, 16);
        b.commit(0..17, "127.0.0.1:9".parse().unwrap());
    }

    #[test]
    fn requeue_moves_unsent_to_front() {
        let mut b = SendBatch::new(3, 8);
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for d in [b"a", b"b", b"c"] {
            assert!(b.push(d, dest));
        }
        b.requeue_from(2);
        assert_eq!(b.len(), 1);
        assert_eq!(b.queued[0].0..b.queued[0].1, 0..1);
        assert_eq!(&b.bufs[..1], b"c");
    }

    #[test]
    fn loopback_batches_with_headroom() {
        let rx_sock = loopback();
        let tx_sock = loopback();
        let dest = rx_sock.local_addr();
        let mut tx = SendBatch::new(16, 256);
        let mut rx = RecvBatch::new(8, 256);
        let mut sent = 0;
        for i in 0..40u8 {
            if tx.is_full() {
                sent += tx.flush(&tx_sock).unwrap();
            }
            let slot = tx.slot_mut().unwrap();
            slot[24] = i;
            slot[25..25 + usize::from(i)].fill(i);
            tx.commit(24..25 + usize::from(i), dest);
        }
        sent += tx.flush(&tx_sock).unwrap();
        assert_eq!(sent, 40);
        assert_eq!(tx.sent(), 40);
        assert!(tx.is_empty());
        let got = recv_all(&mut rx, &rx_sock, 40);
        assert_eq!(got.len(), 40);
        for (i, (src, bytes)) in got.iter().enumerate() {
            assert_eq!(*src, tx_sock.local_addr());
            assert_eq!(bytes.len(), 1 + i);
            assert!(bytes.iter().all(|&b| usize::from(b) == i));
        }
        assert!(matches!(rx.recv(&rx_sock), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    }

    #[test]
    fn truncated_datagrams_are_dropped_and_counted() {
        let rx_sock = loopback();
        let tx_sock = loopback();
        tx_sock.send_to(&[1; 100], rx_sock.local_addr()).unwrap();
        tx_sock.send_to(&[2; 10], rx_sock.local_addr()).unwrap();
        let mut rx = RecvBatch::new(4, 50);
        let got = recv_all(&mut rx, &rx_sock, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, vec![2; 10]);
        assert_eq!(rx.truncated(), 1);
    }

    #[test]
    fn per_datagram_errors_do_not_block_the_rest() {
        let tx_sock = loopback();
        let rx_sock = loopback();
        let mut tx = SendBatch::new(4, 16);
        // An IPv6 destination on an IPv4 socket is refused for that datagram only.
        assert!(tx.push(b"bad", "[::1]:9".parse().unwrap()));
        assert!(tx.push(b"good", rx_sock.local_addr()));
        assert_eq!(tx.flush(&tx_sock).unwrap(), 1);
        assert_eq!(tx.failed(), 1);
        assert!(tx.take_last_error().is_some());
        let mut rx = RecvBatch::new(4, 16);
        let got = recv_all(&mut rx, &rx_sock, 1);
        assert_eq!(got[0].1, b"good");
    }

    #[test]
    fn gro_messages_are_split() {
        let rx_sock = loopback();
        rx_sock.set_gro(true).unwrap();
        let tx_sock = loopback();
        // Send one 1000-byte buffer as ten 100-byte datagrams with UDP GSO; with GRO on the
        // receiver gets them as one message plus the segment size (if the kernel coalesces),
        // and RecvBatch must split it back.
        setsockopt_int(tx_sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 100).unwrap();
        let mut payload = vec![0u8; 1000];
        for (i, chunk) in payload.chunks_mut(100).enumerate() {
            chunk.fill(i as u8);
        }
        payload.truncate(950); // the last datagram is shorter
        tx_sock.send_to(&payload, rx_sock.local_addr()).unwrap();
        let mut rx = RecvBatch::new(4, GRO_SLOT_SIZE);
        assert!(rx_sock.wait_readable(1000).unwrap());
        // Four slots but ten datagrams in one call: they came as one coalesced message.
        assert_eq!(rx.recv(&rx_sock).unwrap(), 10);
        let got: Vec<_> = (0..rx.len())
            .map(|i| (rx.get(i).0, rx.get(i).1.to_vec()))
            .collect();
        assert_eq!(got.len(), 10);
        for (i, (_, bytes)) in got.iter().enumerate() {
            assert_eq!(bytes.len(), if i == 9 { 50 } else { 100 });
            assert!(bytes.iter().all(|&b| usize::from(b) == i));
        }
    }

    #[test]
    fn gso_runs_go_out_as_the_same_datagrams() {
        let rx_sock = loopback();
        let other = loopback();
        let tx_sock = loopback();
        let mut tx = SendBatch::new(32, 256);
        tx.set_gso(true);
        // Ten equal datagrams and a shorter one to rx (one GSO run), then one to `other`,
        // then three more to rx (a second run).
        let mut expect_rx = Vec::new();
        for i in 0..11u8 {
            let d = vec![i; if i == 10 { 40 } else { 100 }];
            assert!(tx.push(&d, rx_sock.local_addr()));
            expect_rx.push(d);
        }
        assert!(tx.push(b"elsewhere", other.local_addr()));
        for i in 20..23u8 {
            let d = vec![i; 100];
            assert!(tx.push(&d, rx_sock.local_addr()));
            expect_rx.push(d);
        }
        assert_eq!(tx.flush(&tx_sock).unwrap(), 15);
        assert!(tx.gso(), "the kernel refused UDP GSO on loopback");
        assert_eq!(tx.gso_messages(), 2);
        // Without GRO the receiver sees every datagram on its own, in order, unchanged.
        let mut rx = RecvBatch::new(32, 256);
        let got: Vec<Vec<u8>> = recv_all(&mut rx, &rx_sock, 14)
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(got, expect_rx);
        let mut rx2 = RecvBatch::new(4, 256);
        assert_eq!(recv_all(&mut rx2, &other, 1)[0].1, b"elsewhere");
    }
}
