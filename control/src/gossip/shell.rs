//! The gossip shell: the membership core on UDP and TCP (7946 by default), with memberlist's
//! wire format, so Serf agents and shoal nodes are members of one cluster.
//!
//! One thread runs a current-thread tokio runtime: it receives packets, feeds the core, ticks
//! it every [`TICK`], sends what it says (piggybacked, sealed with the primary key if the
//! cluster is encrypted), answers push/pull and TCP pings on the listener, and does a push/pull
//! with a random member every [`PUSH_PULL`] (anti-entropy). Nonces come from the OS.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

use super::membership::{Config, Event, Member, Membership, Output};
use super::wire::{
    Ack, Keyring, PushPull, StreamMessage, WireError, decode_packet, decode_stream, encode,
    encode_compound, encode_stream, seal_packet, seal_stream,
};
use dataplane::types::Timestamp;

/// How often the core is ticked.
pub const TICK: Duration = Duration::from_millis(50);
/// memberlist's LAN push/pull interval.
pub const PUSH_PULL: Duration = Duration::from_secs(30);
/// A stream that does not finish in this long is dropped.
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node is and how it gossips.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub name: String,
    /// Bound for UDP and TCP; also the address announced to others.
    pub bind: SocketAddr,
    pub keyring: Option<Keyring>,
    pub membership: Config,
}

/// Shared between the handle and the thread.
#[derive(Debug)]
struct Inner {
    core: Mutex<Membership>,
    events: Mutex<Vec<Event>>,
    /// Input refused, by the decoder's reason (`WireError::kind`), UDP and TCP alike.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    keyring: Option<Keyring>,
    clock: std::time::Instant,
}

/// A running gossip node; stops (without leaving) when dropped.
#[derive(Debug)]
pub struct GossipNode {
    inner: Arc<Inner>,
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Inner {
    #[allow(clippy::disallowed_methods)] // shell: the core's clock
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn reject(&self, error: &WireError) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(error.kind())
            .or_default() += 1;
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns the core's outputs into datagrams and events.
    async fn deliver(&self, socket: &UdpSocket, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Event(e) => self
                    .events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e),
                Output::Send { to, messages } => {
                    let body = match messages.as_slice() {
                        [one] => encode(one),
                        many => match encode_compound(&many.iter().map(encode).collect::<Vec<_>>())
                        {
                            Ok(body) => body,
                            Err(_) => continue,
                        },
                    };
                    let Ok(packet) = self.seal(body, false) else {
                        continue;
                    };
                    let _ = socket.send_to(&packet, to).await;
                }
            }
        }
    }

    fn seal(&self, body: Vec<u8>, stream: bool) -> Result<Vec<u8>, WireError> {
        let Some(ring) = &self.keyring else {
            return Ok(body);
        };
        let nonce = nonce().ok_or(WireError::Incomplete)?;
        if stream {
            seal_stream(&body, ring.primary(), nonce, b"")
        } else {
            seal_packet(&body, ring.primary(), nonce, b"")
        }
    }
}

fn nonce() -> Option<[u8; 12]> {
    use ring::rand::SecureRandom;
    let mut n = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut n).ok()?;
    Some(n)
}

impl GossipNode {
    /// Binds UDP and TCP on `config.bind` and starts gossiping (alone until [`join`](Self::join)).
    #[allow(clippy::disallowed_methods)] // shell: seeds the core and starts its clock
    pub fn start(config: GossipConfig) -> io::Result<GossipNode> {
        let udp = std::net::UdpSocket::bind(config.bind)?;
        udp.set_nonblocking(true)?;
        let addr = udp.local_addr()?;
        let tcp = std::net::TcpListener::bind(addr)?;
        tcp.set_nonblocking(true)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let core = Membership::new(config.membership, &config.name, addr, Vec::new(), seed);
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            events: Mutex::new(Vec::new()),
            rejected: Mutex::new(BTreeMap::new()),
            keyring: config.keyring,
            clock: std::time::Instant::now(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-gossip".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(udp) = UdpSocket::from_std(udp) else {
                        return;
                    };
                    let Ok(tcp) = TcpListener::from_std(tcp) else {
                        return;
                    };
                    tokio::select! {
                        _ = run(worker, Arc::new(udp), tcp) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(GossipNode {
            inner,
            addr,
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Joins through `seeds` with a push/pull exchange each; returns how many answered.
    pub fn join(&self, seeds: &[SocketAddr]) -> usize {
        let inner = self.inner.clone();
        let seeds = seeds.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let mut joined = 0;
            for seed in seeds {
                if push_pull(&inner, seed, true).await.is_ok() {
                    joined += 1;
                }
            }
            let _ = tx.send(joined);
        });
        rx.recv_timeout(STREAM_TIMEOUT * 4).unwrap_or(0)
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner.core().members().cloned().collect()
    }

    /// Input refused so far, by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.inner
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Events since the last call.
    pub fn events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.inner.events.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for GossipNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(inner: Arc<Inner>, udp: Arc<UdpSocket>, tcp: TcpListener) {
    let mut tick = tokio::time::interval(TICK);
    let mut anti_entropy = tokio::time::interval(PUSH_PULL);
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            received = udp.recv_from(&mut buf) => {
                let Ok((len, from)) = received else { continue };
                let packet = match decode_packet(&buf[..len], inner.keyring.as_ref()) {
                    Ok(packet) => packet,
                    Err(e) => {
                        inner.reject(&e);
                        continue;
                    }
                };
                for e in &packet.errors {
                    inner.reject(e);
                }
                let now = inner.now();
                let outputs: Vec<Output> = {
                    let mut core = inner.core();
                    packet.messages.into_iter().flat_map(|m| core.handle(now, from, m)).collect()
                };
                inner.deliver(&udp, outputs).await;
            }
            _ = tick.tick() => {
                let outputs = { let now = inner.now(); inner.core().tick(now) };
                inner.deliver(&udp, outputs).await;
            }
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    let (inner, udp) = (inner.clone(), udp.clone());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(STREAM_TIMEOUT, serve_stream(&inner, &udp, stream)).await;
                    });
                }
            }
            _ = anti_entropy.tick() => {
                let peer = {
                    let core = inner.core();
                    let alive: Vec<SocketAddr> = core.members().filter(|m| m.state == super::wire::NodeState::Alive).map(|m| m.addr).collect();
                    alive.get(nonce().map_or(0, |n| usize::from(n[0])) % alive.len().max(1)).copied()
                };
                if let Some(peer) = peer {
                    let inner = inner.clone();
                    tokio::spawn(async move { let _ = push_pull(&inner, peer, false).await; });
                }
            }
        }
    }
}

/// Reads one stream message (bounded by the caller's timeout and the decoder's limits).
async fn read_message(inner: &Inner, stream: &mut TcpStream) -> io::Result<StreamMessage> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match decode_stream(&buf, inner.keyring.as_ref()) {
            Ok((frame, _)) => return Ok(frame.message),
            Err(WireError::Incomplete) => {}
            Err(e) => {
                inner.reject(&e);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn write_message(
    inner: &Inner,
    stream: &mut TcpStream,
    message: &StreamMessage,
) -> io::Result<()> {
    let sealed = inner
        .seal(encode_stream(message), true)
        .map_err(|e| io::Error::other(e.to_string()))?;
    stream.write_all(&sealed).await
}

fn our_push_pull(inner: &Inner, join: bool) -> StreamMessage {
    StreamMessage::PushPull(PushPull {
        join,
        nodes: inner.core().local_state(),
        user_state: Vec::new(),
    })
}

/// A push/pull or a TCP ping from another node.
async fn serve_stream(inner: &Inner, udp: &UdpSocket, mut stream: TcpStream) -> io::Result<()> {
    match read_message(inner, &mut stream).await? {
        StreamMessage::PushPull(theirs) => {
            write_message(inner, &mut stream, &our_push_pull(inner, false)).await?;
            let outputs = {
                let now = inner.now();
                inner.core().merge_remote_state(now, theirs.nodes)
            };
            inner.deliver(udp, outputs).await;
        }
        StreamMessage::Ping(ping) => {
            write_message(
                inner,
                &mut stream,
                &StreamMessage::Ack(Ack {
                    seq_no: ping.seq_no,
                    payload: Vec::new(),
                }),
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Our push/pull with `peer` (a join, or anti-entropy).
async fn push_pull(inner: &Inner, peer: SocketAddr, join: bool) -> io::Result<()> {
    let exchange = async {
        let mut stream = TcpStream::connect(peer).await?;
        write_message(inner, &mut stream, &our_push_pull(inner, join)).await?;
        match read_message(inner, &mut stream).await? {
            StreamMessage::PushPull(theirs) => Ok(theirs.nodes),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a push/pull",
            )),
        }
    };
    let nodes = tokio::time::timeout(STREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let outputs = {
        let now = inner.now();
        inner.core().merge_remote_state(now, nodes)
    };
    // The merge's news goes out with the next tick's packets.
    let _ = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            Output::Send { .. } => None,
        })
        .map(|e| {
            inner
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e)
        })
        .count();
    Ok(())
}
