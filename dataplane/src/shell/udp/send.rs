//! Sending: `sendmmsg` from preallocated slots, runs of equal datagrams as UDP GSO.

use super::addr::*;
use super::*;

/// Preallocated `sendmmsg` state: `n` slots of `slot_size` bytes.
///
/// Fill the next free slot from [`slot_mut`](Self::slot_mut) (e.g. a frame at offset 24, its
/// VXLAN header before it), then [`commit`](Self::commit) the datagram's byte range and its
/// destination. [`flush`](Self::flush) sends everything queued.
pub struct SendBatch {
    slot_size: usize,
    pub(super) bufs: Vec<u8>,
    pub(super) queued: Vec<(usize, usize, SocketAddr)>, // (start, end) within the slot, dest
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
    pub(super) fn requeue_from(&mut self, head: usize) {
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
