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
//! is opt-in too ([`SendBatch::set_gso`]): runs of equal datagrams to one destination leave
//! as one `UDP_SEGMENT` message.
//!
//! Files: this one holds the socket; `addr` the sockaddr and control-message helpers,
//! `recv` [`RecvBatch`], `send` [`SendBatch`].

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::netns::{NetnsRef, in_netns};

mod addr;
mod recv;
mod send;
#[cfg(test)]
mod tests;

pub use recv::RecvBatch;
pub use send::SendBatch;

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
