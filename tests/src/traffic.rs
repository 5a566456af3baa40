//! Real kernel TCP traffic inside container namespaces: an echo server, a checked bulk
//! echo, a connect that must fail. Sockets are created inside the namespace (on a thread
//! that entered it) and keep living there whatever thread uses them afterwards.
//!
//! Every loop here is bounded by a byte count and a deadline.

use dataplane::shell::netns::{NetnsRef, in_netns};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A TCP echo server in a namespace; stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl EchoServer {
    pub fn start(ns: &NetnsRef, addr: SocketAddr) -> io::Result<EchoServer> {
        Self::serve(ns, addr, None)
    }

    /// An echo server that first says who it is: one line `<name> <client address>` on every
    /// connection (what a balancing test reads to see which backend served it, and whether
    /// the backend saw the real client).
    pub fn whoami(ns: &NetnsRef, addr: SocketAddr, name: &str) -> io::Result<EchoServer> {
        Self::serve(ns, addr, Some(Arc::from(name)))
    }

    fn serve(ns: &NetnsRef, addr: SocketAddr, name: Option<Arc<str>>) -> io::Result<EchoServer> {
        let listener = Arc::new(in_netns(ns, move || TcpListener::bind(addr))?);
        let stopping = Arc::new(AtomicBool::new(false));
        let (l, stop) = (listener.clone(), stopping.clone());
        let thread = std::thread::spawn(move || {
            while let Ok((mut conn, peer)) = l.accept() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(name) = &name
                    && writeln!(conn, "{name} {}", peer.ip()).is_err()
                {
                    continue;
                }
                std::thread::spawn(move || echo(conn));
            }
        });
        Ok(EchoServer {
            listener,
            stopping,
            thread: Some(thread),
            addr,
        })
    }
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // shutdown() on a listening socket wakes a blocked accept() with an error.
        // SAFETY: the fd is owned by `self.listener`, alive for this call.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A deterministic byte pattern: position-dependent, so a lost, duplicated or reordered
/// chunk is detected, not only a wrong length.
pub fn pattern(at: usize) -> u8 {
    let x = (at as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (at as u8)
}

/// Connects from namespace `ns` to `dst`, sends `total` bytes of [`pattern`] and checks that
/// exactly the same bytes come back, all within `deadline`. `during` runs on its own thread
/// while the transfer is in flight (e.g. a key rotation); its result is returned with the
/// transfer's.
pub fn echo_bulk<T: Send>(
    ns: &NetnsRef,
    dst: SocketAddr,
    total: usize,
    deadline: Duration,
    during: impl FnOnce() -> T + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        let side = scope.spawn(during);
        let transfer = echo_bulk_inner(ns, dst, total, deadline);
        let side = side
            .join()
            .map_err(|_| io::Error::other("the side task panicked"))?;
        transfer.map(|()| side)
    })
}

fn echo_bulk_inner(
    ns: &NetnsRef,
    dst: SocketAddr,
    total: usize,
    deadline: Duration,
) -> io::Result<()> {
    let stream = in_netns(ns, move || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(5))
    })?;
    stream.set_read_timeout(Some(deadline))?;
    stream.set_write_timeout(Some(deadline))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> io::Result<()> {
        let mut chunk = vec![0u8; 32 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern(sent + i);
            }
            writer.write_all(&chunk[..n])?;
            sent += n;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = stream;
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0;
    while received < total {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("echo closed after {received} of {total} bytes"),
            ));
        }
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern(received + i)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("echoed byte {} differs", received + i),
            ));
        }
        received += n;
    }
    sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??;
    Ok(())
}

/// Tries to connect from `ns` to `dst`; returns the error and how long it took to fail.
/// `Ok` when the connect succeeded (which isolation tests treat as a failure).
pub fn connect_error(
    ns: &NetnsRef,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<(), (io::Error, Duration)> {
    #[allow(clippy::disallowed_methods)] // tests measure wall time
    let start = std::time::Instant::now();
    let result = in_netns(ns, move || {
        TcpStream::connect_timeout(&dst, timeout).map(drop)
    });
    result.map_err(|e| (e, start.elapsed()))
}

/// Reads one line (up to and including `\n`, or to EOF) byte by byte, so nothing after it is
/// consumed: the rest of the stream stays for the caller (an echo after a greeting).
pub fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Opens `count` connections from `ns` to `dst` one after the other and returns the first
/// line each one read (a [`EchoServer::whoami`] greeting). Bounded: each connect and read
/// waits `timeout` at most.
pub fn who_answers(
    ns: &NetnsRef,
    dst: SocketAddr,
    count: usize,
    timeout: Duration,
) -> io::Result<Vec<String>> {
    in_netns(ns, move || {
        let mut lines = Vec::with_capacity(count);
        for _ in 0..count {
            let conn = TcpStream::connect_timeout(&dst, timeout)?;
            conn.set_read_timeout(Some(timeout))?;
            let mut line = String::new();
            io::BufRead::read_line(&mut io::BufReader::new(conn), &mut line)?;
            lines.push(line.trim_end().to_owned());
        }
        Ok(lines)
    })
}

/// A UDP echo server in a namespace (each datagram sent back to its sender); stops on drop.
#[derive(Debug)]
pub struct UdpEchoServer {
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoServer {
    pub fn start(ns: &NetnsRef, addr: SocketAddr) -> io::Result<UdpEchoServer> {
        let socket = in_netns(ns, move || std::net::UdpSocket::bind(addr))?;
        // Wakes now and then to notice `stopping`.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        });
        Ok(UdpEchoServer {
            stopping,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.0 `GET /` from `ns` to a `shoal whoami` at `dst`: the `task:` line of its
/// answer (which task served the connection). Bounded by `timeout` per step.
pub fn whoami_task(ns: &NetnsRef, dst: SocketAddr, timeout: Duration) -> io::Result<String> {
    in_netns(ns, move || {
        let mut conn = TcpStream::connect_timeout(&dst, timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        response
            .lines()
            .find_map(|l| l.strip_prefix("task: "))
            .map(str::to_owned)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, response))
    })
}
