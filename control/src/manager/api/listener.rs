//! The API's listeners: TLS with client certificates (what a cluster runs), or plain HTTP
//! for a manager started with `--insecure` (tests, labs on loopback). Either way each
//! connection carries its [`Caller`], which the routes check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::manager::trust::{NodeIdentity, peer_identity};

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Plain HTTP (`--insecure`): no identity, everything allowed.
    Insecure,
    /// TLS without a client certificate: may only join.
    Anonymous,
    /// TLS with a certificate of the cluster CA.
    Member(NodeIdentity),
}

/// A connection's caller and address, as axum's `ConnectInfo`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub caller: Caller,
}

/// Plain TCP, every caller [`Caller::Insecure`].
#[derive(Debug)]
pub struct PlainListener(pub TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    return (
                        stream,
                        Peer {
                            addr,
                            caller: Caller::Insecure,
                        },
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            caller: Caller::Insecure,
        })
    }
}

/// TLS: handshakes run concurrently (each bounded), so one slow client delays nobody; the
/// finished ones queue here with their caller.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

impl TlsListener {
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let caller = match peer_identity(tls.get_ref().1) {
                        Some(identity) => Caller::Member(identity),
                        None => Caller::Anonymous,
                    };
                    let _ = tx.send((tls, Peer { addr, caller })).await;
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(ready) = self.ready.recv().await {
                return ready;
            }
            // The accept task is gone (the runtime is shutting down): nothing will come.
            std::future::pending::<()>().await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            caller: Caller::Anonymous,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PlainListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PlainListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
