//! What the network says about our datagrams: with `IP_RECVERR` (`IPV6_RECVERR`) on the gossip
//! socket, an ICMP port or host unreachable that comes back for a packet is queued on the
//! socket's error queue with the packet's destination. The shell hands those destinations to
//! the core ([`NetDb::unreachable`](super::netdb::NetDb::unreachable)): a member whose process
//! died on a live host answers our probes with port unreachables, long before a probe
//! interval has passed.

use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};

/// Asks the kernel to queue ICMP errors on `socket`'s error queue.
pub fn enable(socket: &std::net::UdpSocket) -> io::Result<()> {
    let v6 = socket.local_addr()?.is_ipv6();
    let done = if v6 {
        setsockopt(socket, sockopt::Ipv6RecvErr, &true)
    } else {
        setsockopt(socket, sockopt::Ipv4RecvErr, &true)
    };
    done.map_err(io::Error::from)
}

/// The next entry of the error queue: `Ok(Some(destination))` if it says the destination's
/// port, host or network is unreachable, `Ok(None)` for another kind of error (a local
/// `EMSGSIZE`, say), `Err(WouldBlock)` when the queue is empty.
pub fn next(socket: &impl AsFd) -> io::Result<Option<SocketAddr>> {
    use std::os::fd::AsRawFd;
    // The kernel gives back the start of the packet too; its contents do not matter here.
    let mut buf = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let errno = msg.cmsgs().map_err(io::Error::from)?.find_map(|c| match c {
        ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
            Some(e.ee_errno as i32)
        }
        _ => None,
    });
    let unreachable = matches!(
        errno.map(Errno::from_raw),
        Some(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH)
    );
    Ok(msg.address.filter(|_| unreachable).and_then(|a| to_std(&a)))
}

/// Every entry of the error queue that says a destination is unreachable (at most `max`):
/// read without waiting, and without asking the runtime whether there is any, because tokio's
/// error readiness misses some: an ICMP error that comes back while a receive is under way is
/// reported to that receive (as `ECONNREFUSED`) and may never wake an error waiter.
pub fn drain(socket: &impl AsFd, max: usize) -> Vec<SocketAddr> {
    let mut found = Vec::new();
    for _ in 0..max {
        match next(socket) {
            Ok(Some(addr)) => found.push(addr),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    found
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_to_a_closed_port_is_reported_with_its_destination() {
        // A port nobody listens on: bind one, note it, close it.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        enable(&socket).expect("IP_RECVERR");
        assert_eq!(
            next(&socket).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "nothing queued yet"
        );
        socket.send_to(b"ping", closed).expect("send");
        // Loopback answers at once, but give the kernel a moment (up to 2 s).
        let mut tries = 0;
        let got = loop {
            match next(&socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tries += 1;
                    assert!(tries < 400, "no ICMP error queued");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.expect("read the error queue"),
            }
        };
        assert_eq!(got, Some(closed));
        assert_eq!(
            next(&socket).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "one entry per datagram"
        );
    }
}
