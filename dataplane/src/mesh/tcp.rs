//! Published TCP ports: accept on the node, connect from the sandbox to the target, relay.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::stats::{ActiveGuard, PortCounters};
use super::{Relay, proxy_v2};

/// A listening socket on `addr` (in the calling thread's namespace), non-blocking.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    // Tasks reach a published port on any node's address through their node's egress bridge,
    // where those addresses are local only for them (shell::gwbridge): answering from an
    // address no interface holds takes a transparent socket. Without CAP_NET_ADMIN it is
    // refused, and only the node's own address serves them.
    if addr.is_ipv4() {
        let _ = socket.set_ip_transparent_v4(true);
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Relay {
    pub async fn serve_tcp(self, listener: std::net::TcpListener) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!("mesh: cannot serve {}: {e}", self.spec.listen),
        };
        let relay = Arc::new(self);
        // Aborting this task (unpublish) drops the set and cuts its connections.
        let mut connections = JoinSet::new();
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off a little rather than spin.
                    tracing::warn!("mesh: accept on {}: {e}", relay.spec.listen);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            while connections.try_join_next().is_some() {}
            if connections.len() >= relay.config.max_flows_per_port {
                PortCounters::add(&relay.counters.over_limit, 1);
                continue;
            }
            connections.spawn(relay.clone().relay(client, peer));
        }
    }

    async fn relay(self: Arc<Self>, mut client: TcpStream, peer: SocketAddr) {
        let counters = &self.counters;
        PortCounters::add(&counters.total, 1);
        let _active = ActiveGuard::new(&counters.active);
        let mut upstream = match timeout(
            self.config.connect_timeout,
            TcpStream::connect(self.spec.target),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) | Err(_) => {
                // Refused (no backend: the VIP resets at once) or no answer: the client is
                // closed rather than left waiting.
                PortCounters::add(&counters.connect_failed, 1);
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        if self.spec.proxy_protocol {
            let local = client.local_addr().unwrap_or(self.spec.listen);
            let header = proxy_v2::header(peer, local, proxy_v2::Transport::Stream);
            if upstream.write_all(&header).await.is_err() {
                return;
            }
        }
        // Both directions at once; an EOF on one side shuts down writing on the other
        // (half-close), and each direction waits for the other side to take its bytes.
        if let Ok((to_task, to_client)) =
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
        {
            counters.bytes_in.fetch_add(to_task, Ordering::Relaxed);
            counters.bytes_out.fetch_add(to_client, Ordering::Relaxed);
        }
    }
}
