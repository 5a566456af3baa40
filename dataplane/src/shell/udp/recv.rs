//! Receiving: `recvmmsg` into preallocated slots, GRO messages split into datagrams.

use super::addr::*;
use super::*;

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
