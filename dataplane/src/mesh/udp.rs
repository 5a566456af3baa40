//! Published UDP ports: one session per client address, each with its own socket in the
//! sandbox connected to the target; replies go back from the published port. A session ends
//! after the idle time with no datagram either way.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::stats::{ActiveGuard, PortCounters};
use super::{Relay, proxy_v2};

/// A UDP socket on `addr` (in the calling thread's namespace), non-blocking.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[derive(Debug)]
struct Session {
    upstream: Arc<UdpSocket>,
    /// Set by every datagram from the client; the session's task clears it each idle period.
    heard: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn serve_udp(self, socket: std::net::UdpSocket) {
        let socket = match UdpSocket::from_std(socket) {
            Ok(s) => Arc::new(s),
            Err(e) => return tracing::error!("mesh: cannot serve {}: {e}", self.spec.listen),
        };
        let relay = Arc::new(self);
        // Dropping the map (unpublish aborts this task) aborts every session.
        let mut sessions: BTreeMap<SocketAddr, Session> = BTreeMap::new();
        let (ended_tx, mut ended) = mpsc::unbounded_channel::<SocketAddr>();
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        loop {
            let (len, client) = tokio::select! {
                got = socket.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    Err(_) => continue, // ICMP errors of earlier sends surface here
                },
                Some(client) = ended.recv() => {
                    sessions.remove(&client);
                    continue;
                }
            };
            if !sessions.contains_key(&client) {
                if sessions.len() >= relay.config.max_flows_per_port {
                    PortCounters::add(&relay.counters.over_limit, 1);
                    continue;
                }
                match relay
                    .clone()
                    .open(client, socket.clone(), ended_tx.clone())
                    .await
                {
                    Ok(session) => {
                        sessions.insert(client, session);
                    }
                    Err(_) => {
                        PortCounters::add(&relay.counters.connect_failed, 1);
                        continue;
                    }
                }
            }
            let Some(session) = sessions.get(&client) else {
                continue;
            };
            session.heard.store(true, Ordering::Relaxed);
            let sent = if relay.spec.proxy_protocol {
                let local = relay.spec.listen;
                let mut framed = proxy_v2::header(client, local, proxy_v2::Transport::Datagram);
                framed.extend_from_slice(&buf[..len]);
                session.upstream.send(&framed).await
            } else {
                session.upstream.send(&buf[..len]).await
            };
            if sent.is_ok() {
                PortCounters::add(&relay.counters.bytes_in, len as u64);
            }
        }
    }

    /// A new session: a socket in the sandbox connected to the target, and the task that
    /// returns its replies to the client.
    async fn open(
        self: Arc<Self>,
        client: SocketAddr,
        published: Arc<UdpSocket>,
        ended: mpsc::UnboundedSender<SocketAddr>,
    ) -> io::Result<Session> {
        let local: SocketAddr = match self.spec.target {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let upstream = Arc::new(UdpSocket::bind(local).await?);
        upstream.connect(self.spec.target).await?;
        let heard = Arc::new(AtomicBool::new(true));
        PortCounters::add(&self.counters.total, 1);
        let (up, h) = (upstream.clone(), heard.clone());
        let task = tokio::spawn(async move {
            let _active = ActiveGuard::new(&self.counters.active);
            let mut buf = vec![0u8; usize::from(u16::MAX)];
            loop {
                match timeout(self.config.udp_idle, up.recv(&mut buf)).await {
                    Ok(Ok(len)) => {
                        if published.send_to(&buf[..len], client).await.is_ok() {
                            PortCounters::add(&self.counters.bytes_out, len as u64);
                        }
                    }
                    // The target refused (ICMP port unreachable): let the session go.
                    Ok(Err(_)) => break,
                    // A quiet period: the session lives on only if the client spoke in it.
                    Err(_) if h.swap(false, Ordering::Relaxed) => {}
                    Err(_) => break,
                }
            }
            let _ = ended.send(client);
        });
        Ok(Session {
            upstream,
            heard,
            task,
        })
    }
}
