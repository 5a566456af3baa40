//! A small upstream resolver for the DNS tests, serving UDP and TCP on an address inside a
//! test namespace. Its zone is fixed and says what each name tests:
//!
//! - `<anything>.example.test` A → 192.0.2.1 (a name only the upstream knows);
//! - `servfail.example.test` → SERVFAIL (the forwarder must try the next upstream);
//! - `silent.example.test` → no reply at all (the forwarder's timeout);
//! - anything else → NXDOMAIN.
//!
//! It counts the queries it received, so a test can tell whether something was forwarded.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use dataplane::shell::netns::{NetnsRef, in_netns};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// The address every `*.example.test` name has upstream.
pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A running stub; stops (and closes its sockets) on drop.
#[derive(Debug)]
pub struct StubUpstream {
    pub addr: SocketAddr,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl StubUpstream {
    /// Binds UDP and TCP on `addr` inside `ns` and serves them from two threads.
    pub fn start(ns: &NetnsRef, addr: SocketAddr) -> io::Result<Self> {
        let (udp, tcp) = in_netns(ns, move || {
            let udp = UdpSocket::bind(addr)?;
            let tcp = TcpListener::bind(addr)?;
            Ok((udp, tcp))
        })?;
        // Short timeouts so the threads notice `stop` quickly.
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        tcp.set_nonblocking(true)?;
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let udp_thread = std::thread::spawn(move || serve_udp(&udp, &q, &s));
        let (q, s) = (queries.clone(), stop.clone());
        let tcp_thread = std::thread::spawn(move || serve_tcp(&tcp, &q, &s));
        Ok(Self {
            addr,
            queries,
            stop,
            threads: vec![udp_thread, tcp_thread],
        })
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for StubUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve_udp(socket: &UdpSocket, queries: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        queries.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = reply_to(&buf[..len]) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

fn serve_tcp(listener: &TcpListener, queries: &AtomicU64, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut len = [0u8; 2];
        while stream.read_exact(&mut len).is_ok() {
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).is_err() {
                break;
            }
            queries.fetch_add(1, Ordering::Relaxed);
            let Some(reply) = reply_to(&query) else {
                continue;
            };
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).is_err() {
                break;
            }
        }
    }
}

/// The stub's zone (see the module doc). `None`: stay silent.
fn reply_to(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let name = question.name().to_lowercase().to_ascii();
    let mut reply = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    match name.as_str() {
        "silent.example.test." => return None,
        "servfail.example.test." => reply.metadata.response_code = ResponseCode::ServFail,
        n if n.ends_with(".example.test.") => {
            if question.query_type() == RecordType::A {
                let record =
                    Record::from_rdata(question.name().clone(), 60, RData::A(A(UPSTREAM_ANSWER)));
                reply.add_answer(record);
            }
        }
        _ => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.to_vec().ok()
}
