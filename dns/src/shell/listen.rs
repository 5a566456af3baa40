//! The listeners of one endpoint (one container namespace): a UDP loop and a TCP accept loop on
//! sockets bound inside that namespace, both answering through the core with the endpoint's
//! scope. Forwards run as their own tasks, bounded by the endpoint's forward cap.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hickory_proto::op::ResponseCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::Shared;
use super::counters::Counter;
use super::forward::{forward, read_framed, servfail, write_framed};
use crate::answer::{Outcome, Scope, Transport, answer, error_reply};
use crate::upstream::MAX_UPSTREAMS;

/// What one endpoint's listeners share.
#[derive(Debug)]
pub struct EndpointCtx {
    pub shared: Arc<Shared>,
    pub scope: RwLock<Arc<Scope>>,
    pub forwards: Arc<Semaphore>,
}

/// What to do with one query.
enum Respond {
    Now(Vec<u8>),
    Forward(OwnedSemaphorePermit),
    Nothing,
}

impl EndpointCtx {
    fn respond(&self, query: &[u8], transport: Transport, rng: &mut StdRng) -> Respond {
        let snapshot = read_arc(&self.shared.snapshot);
        let scope = read_arc(&self.scope);
        let counters = &self.shared.counters;
        match answer(
            &snapshot,
            &scope,
            self.shared.config.ttls,
            query,
            transport,
            rng,
        ) {
            Outcome::Reply {
                bytes,
                kind,
                truncated,
            } => {
                counters.add_reply(kind, truncated);
                Respond::Now(bytes)
            }
            Outcome::Ignore => {
                counters.add(Counter::Ignored);
                Respond::Nothing
            }
            Outcome::Forward => match self.forwards.clone().try_acquire_owned() {
                Ok(permit) => {
                    counters.add(Counter::Forwarded);
                    Respond::Forward(permit)
                }
                Err(_) => {
                    counters.add(Counter::ForwardCapRefused);
                    Respond::Now(error_reply(query, ResponseCode::Refused))
                }
            },
        }
    }

    /// The upstreams' answer to a forwarded query, or SERVFAIL.
    async fn forwarded(
        &self,
        query: &[u8],
        transport: Transport,
        ids: [u16; MAX_UPSTREAMS],
    ) -> Vec<u8> {
        let shared = &self.shared;
        let per_try = shared.config.forward_timeout;
        match forward(&shared.upstreams, query, transport, per_try, ids).await {
            Some(reply) => {
                shared.counters.add(Counter::ForwardAnswered);
                reply
            }
            None => {
                shared.counters.add(Counter::ForwardFailed);
                servfail(query)
            }
        }
    }
}

/// Reads the current value of a swapped `Arc` (a poisoned lock still holds a whole value).
fn read_arc<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    match lock.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

pub async fn serve_udp(ctx: Arc<EndpointCtx>, socket: std::net::UdpSocket) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => Arc::new(socket),
        Err(e) => return tracing::error!("dns: cannot serve a UDP listener: {e}"),
    };
    let mut rng = StdRng::from_os_rng();
    // A whole datagram always fits: a longer one is not DNS anyway, and the core answers
    // FORMERR to what does not parse.
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // ICMP errors from earlier replies surface here (ECONNREFUSED): not fatal.
            Err(e) if is_transient(&e) => continue,
            Err(e) => return tracing::error!("dns: UDP listener stopped: {e}"),
        };
        ctx.shared.counters.add(Counter::QueriesUdp);
        let query = &buf[..len];
        match ctx.respond(query, Transport::Udp, &mut rng) {
            Respond::Now(reply) => send_udp(&ctx, &socket, &reply, peer).await,
            Respond::Forward(permit) => {
                let (ctx, socket, query, ids) =
                    (ctx.clone(), socket.clone(), query.to_vec(), rng.random());
                tokio::spawn(async move {
                    let reply = ctx.forwarded(&query, Transport::Udp, ids).await;
                    send_udp(&ctx, &socket, &reply, peer).await;
                    drop(permit);
                });
            }
            Respond::Nothing => {}
        }
    }
}

async fn send_udp(ctx: &EndpointCtx, socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if socket.send_to(reply, peer).await.is_err() {
        ctx.shared.counters.add(Counter::SendErrors);
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

pub async fn serve_tcp(ctx: Arc<EndpointCtx>, listener: std::net::TcpListener) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!("dns: cannot serve a TCP listener: {e}"),
    };
    // Dropping the set (when the endpoint goes) aborts its connections.
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if is_transient(&e) => continue,
            // Out of descriptors for a moment: wait for connections to close, do not spin.
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return tracing::error!("dns: TCP listener stopped: {e}"),
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= ctx.shared.config.max_tcp_connections {
            ctx.shared.counters.add(Counter::TcpConnsRefused);
            continue;
        }
        connections.spawn(serve_connection(ctx.clone(), stream));
    }
}

/// Queries in order on one connection until the client closes it or stays idle too long.
async fn serve_connection(ctx: Arc<EndpointCtx>, mut stream: TcpStream) {
    let mut rng = StdRng::from_os_rng();
    let idle = ctx.shared.config.tcp_idle_timeout;
    while let Ok(Ok(query)) = timeout(idle, read_framed(&mut stream)).await {
        ctx.shared.counters.add(Counter::QueriesTcp);
        let reply = match ctx.respond(&query, Transport::Tcp, &mut rng) {
            Respond::Now(reply) => reply,
            Respond::Forward(permit) => {
                let reply = ctx.forwarded(&query, Transport::Tcp, rng.random()).await;
                drop(permit);
                reply
            }
            Respond::Nothing => continue,
        };
        if write_framed(&mut stream, &reply).await.is_err() {
            ctx.shared.counters.add(Counter::SendErrors);
            return;
        }
    }
}
