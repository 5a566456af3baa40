//! The gossip shell: the [`NetDb`] core (membership and tables) on UDP and TCP (7946 by
//! default), with memberlist's wire format, so Serf agents and shoal nodes are members of one
//! cluster, and shoal nodes share their network tables.
//!
//! One thread runs a current-thread tokio runtime: it receives packets and feeds the core,
//! wakes the core when it asks to be woken ([`NetDb::next_wake`]), sends what it says (sealed
//! with the primary key if the cluster is encrypted), runs the push/pull and bulk-sync stream
//! exchanges it asks for, and answers those of others on the listener. The handle's calls
//! (join a network, write an entry) take the core's lock and leave their outputs for the
//! thread, which they wake. Table events go to every [`GossipNode::watch`]er. Nonces come
//! from the OS.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, oneshot};

use super::membership::{Event, Member};
use super::netdb::{self, NetDb, NotAttached, Output};
use super::tables::{self, Key};
use super::wire::{
    Ack, Keyring, PushPull, StreamMessage, WireError, decode_packet, decode_stream, encode,
    encode_compound, encode_stream, seal_packet, seal_stream,
};
use dataplane::types::Timestamp;

/// The longest the thread sleeps without looking at the core (it is woken earlier by
/// packets, streams and the handle's calls).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// A stream that does not finish in this long is dropped (memberlist's TCP timeout is 10 s;
/// a bulk sync of thousands of entries on loopback takes milliseconds).
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node is and how it gossips.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub name: String,
    /// Bound for UDP and TCP; also the address announced to others.
    pub bind: SocketAddr,
    pub keyring: Option<Keyring>,
    pub config: netdb::Config,
}

/// Shared between the handle and the thread.
#[derive(Debug)]
struct Inner {
    core: Mutex<NetDb>,
    /// Outputs of the handle's calls, for the thread to carry out.
    pending: Mutex<Vec<Output>>,
    wake: Notify,
    events: Mutex<Vec<Event>>,
    watchers: Mutex<Vec<mpsc::Sender<Watched>>>,
    /// Input refused by the wire decoder, by reason (`WireError::kind`), UDP and TCP alike.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Replaced whole by [`GossipNode::set_keyring`] (a rotation); each packet takes the
    /// current one.
    keyring: std::sync::RwLock<Option<Arc<Keyring>>>,
    clock: std::time::Instant,
}

/// What a watcher is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    Member(Event),
    Table(tables::Event),
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    #[allow(clippy::disallowed_methods)] // shell: the core's clock
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn reject(&self, error: &WireError) {
        *lock(&self.rejected).entry(error.kind()).or_default() += 1;
    }

    fn core(&self) -> MutexGuard<'_, NetDb> {
        lock(&self.core)
    }

    /// Runs `f` on the core and tells the watchers its events while still holding the core:
    /// a [`GossipNode::watch`] (which takes the core to read its snapshot) then sees every
    /// event exactly once, after or in its snapshot. Returns the rest of the outputs.
    fn step<R>(&self, f: impl FnOnce(&mut NetDb) -> (R, Vec<Output>)) -> (R, Vec<Output>) {
        let mut core = self.core();
        let (result, outputs) = f(&mut core);
        let mut rest = Vec::with_capacity(outputs.len());
        for output in outputs {
            match output {
                Output::Member(event) => {
                    tracing::debug!(?event, "gossip membership");
                    lock(&self.events).push(event.clone());
                    self.tell(Watched::Member(event));
                }
                Output::Table(event) => self.tell(Watched::Table(event)),
                other => rest.push(other),
            }
        }
        drop(core);
        (result, rest)
    }

    /// [`step`](Self::step) for the calls that return only outputs.
    fn run(&self, f: impl FnOnce(&mut NetDb) -> Vec<Output>) -> Vec<Output> {
        self.step(|core| ((), f(core))).1
    }

    /// Leaves outputs for the thread and wakes it.
    fn submit(&self, outputs: Vec<Output>) {
        lock(&self.pending).extend(outputs);
        self.wake.notify_one();
    }

    /// Carries out the core's outputs: datagrams now, streams as tasks (whose own outputs
    /// come back through [`submit`](Self::submit)), events to their readers.
    async fn deliver(self: &Arc<Self>, udp: &UdpSocket, outputs: Vec<Output>) {
        for output in outputs {
            match output {
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
                    let _ = udp.send_to(&packet, to).await;
                }
                Output::PushPull { to, join } => {
                    let inner = self.clone();
                    tokio::spawn(async move {
                        if let Ok(outputs) = push_pull(&inner, to, join).await {
                            inner.submit(outputs);
                        }
                    });
                }
                Output::Stream { to, payload } => {
                    let inner = self.clone();
                    tokio::spawn(async move {
                        if let Ok(outputs) = send_stream(&inner, to, payload).await {
                            inner.submit(outputs);
                        }
                    });
                }
                // Told by `step` already.
                Output::Member(_) | Output::Table(_) => {}
            }
        }
    }

    fn tell(&self, what: Watched) {
        lock(&self.watchers).retain(|w| w.send(what.clone()).is_ok());
    }

    fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn seal(&self, body: Vec<u8>, stream: bool) -> Result<Vec<u8>, WireError> {
        let Some(ring) = self.keyring() else {
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
        // Best effort: without it, probes of a dead process wait out their timeouts.
        let icmp = super::unreachable::enable(&udp).is_ok();
        let addr = udp.local_addr()?;
        let tcp = std::net::TcpListener::bind(addr)?;
        tcp.set_nonblocking(true)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let core = NetDb::new(config.config, &config.name, addr, seed);
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            pending: Mutex::new(Vec::new()),
            wake: Notify::new(),
            events: Mutex::new(Vec::new()),
            watchers: Mutex::new(Vec::new()),
            rejected: Mutex::new(BTreeMap::new()),
            keyring: std::sync::RwLock::new(config.keyring.map(Arc::new)),
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
                        _ = run(worker, udp, tcp, icmp) => {}
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

    /// Replaces the keyring (a gossip key rotation: the new key accepted first, then made
    /// the primary, the old one dropped last — the order the manager gives). Members keep
    /// talking throughout as long as every step is installed everywhere before the next.
    pub fn set_keyring(&self, keyring: Keyring) {
        *self
            .inner
            .keyring
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keyring));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Joins through `seeds` (also the peers re-joined after a partition) with a push/pull
    /// exchange each; returns how many answered.
    pub fn join(&self, seeds: &[SocketAddr]) -> usize {
        let requests = self.inner.run(|core| core.join(seeds));
        let inner = self.inner.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let mut joined = 0;
            for request in requests {
                if let Output::PushPull { to, join } = request
                    && let Ok(outputs) = push_pull(&inner, to, join).await
                {
                    joined += 1;
                    inner.submit(outputs);
                }
            }
            let _ = tx.send(joined);
        });
        rx.recv_timeout(STREAM_TIMEOUT * (seeds.len() as u32 + 1))
            .unwrap_or(0)
    }

    /// Attaches this node to `network`: it stores and gossips that network's tables.
    pub fn join_network(&self, network: &str) {
        let outputs = self.inner.run(|core| core.join_network(network));
        self.inner.submit(outputs);
    }

    pub fn leave_network(&self, network: &str) {
        let outputs = {
            let now = self.inner.now();
            self.inner.run(|core| core.leave_network(now, network))
        };
        self.inner.submit(outputs);
    }

    /// Writes (`Some`) or deletes (`None`) one of this node's entries.
    pub fn write(&self, key: Key, value: Option<Vec<u8>>) -> Result<(), NotAttached> {
        let outputs = {
            let now = self.inner.now();
            let (written, outputs) = self.inner.step(|core| match core.write(now, key, value) {
                Ok(outputs) => (Ok(()), outputs),
                Err(e) => (Err(e), Vec::new()),
            });
            written?;
            outputs
        };
        self.inner.submit(outputs);
        Ok(())
    }

    /// A live, visible entry: its owner and value.
    pub fn get(&self, key: &Key) -> Option<(String, Vec<u8>)> {
        self.inner
            .core()
            .tables()
            .get(key)
            .map(|(owner, value)| (owner.to_owned(), value.to_vec()))
    }

    /// The watch API that feeds the dataplane and DNS: first the current state (a `Joined`
    /// for every live member, a `Put` for every visible entry), then every member and table
    /// event, each exactly once.
    pub fn watch(&self) -> mpsc::Receiver<Watched> {
        let (tx, rx) = mpsc::channel();
        let core = self.inner.core();
        for m in core.membership().members() {
            if core.membership().is_live(&m.name) {
                let _ = tx.send(Watched::Member(Event::Joined(m.name.clone())));
            }
        }
        for (key, owner, value) in core.tables().visible() {
            let _ = tx.send(Watched::Table(tables::Event::Put {
                key: key.clone(),
                owner: owner.to_owned(),
                value: value.to_vec(),
            }));
        }
        lock(&self.inner.watchers).push(tx);
        drop(core);
        rx
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner.core().membership().members().cloned().collect()
    }

    /// Input refused so far, by reason: the wire decoder's and the table layer's.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        let mut all = lock(&self.inner.rejected).clone();
        for (why, n) in self.inner.core().refused() {
            *all.entry(why.kind()).or_default() += n;
        }
        all
    }

    /// Membership events since the last call.
    pub fn events(&self) -> Vec<Event> {
        std::mem::take(&mut *lock(&self.inner.events))
    }

    /// Tells the cluster this node is leaving (then drop it): others mark it left, not failed.
    pub fn leave(&self) {
        let outputs = self.inner.run(NetDb::leave);
        self.inner.submit(outputs);
        // The thread sends them at once; give it the moment it needs before the caller stops.
        std::thread::sleep(Duration::from_millis(100));
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

/// Error-queue entries read per wake-up at most, so a flood of them cannot starve the rest.
const UNREACHABLE_BATCH: usize = 64;

/// `icmp`: the socket queues ICMP errors (see [`super::unreachable`]). They are charged to
/// its receive buffer, so the queue is read at every turn whatever the runtime says.
async fn run(inner: Arc<Inner>, udp: UdpSocket, tcp: TcpListener, icmp: bool) {
    // Whether to be woken by error readiness (a wake-up sooner; off if the runtime fails it).
    let mut watch_errors = icmp;
    let mut buf = vec![0u8; 65_536];
    loop {
        // Whatever woke us, first what the network said about the packets we sent (on
        // loopback, the ICMP error for a packet is queued before its send returns).
        if icmp {
            let unreachable = super::unreachable::drain(&udp, UNREACHABLE_BATCH);
            if !unreachable.is_empty() {
                let now = inner.now();
                let outputs: Vec<Output> = inner.run(|core| {
                    unreachable
                        .into_iter()
                        .flat_map(|a| core.unreachable(now, a))
                        .collect()
                });
                inner.deliver(&udp, outputs).await;
            }
        }
        let sleep = {
            let now = inner.now();
            let wake = inner.core().next_wake();
            Duration::from_nanos(wake.saturating_sub_nanos(now)).min(MAX_SLEEP)
        };
        tokio::select! {
            received = udp.recv_from(&mut buf) => {
                let Ok((len, from)) = received else { continue };
                let packet = match decode_packet(&buf[..len], inner.keyring().as_deref()) {
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
                    inner.run(|core| packet.messages.into_iter().flat_map(|m| core.handle(now, from, m)).collect())
                };
                inner.deliver(&udp, outputs).await;
            }
            _ = tokio::time::sleep(sleep) => {
                let outputs = { let now = inner.now(); inner.run(|core| core.tick(now)) };
                inner.deliver(&udp, outputs).await;
            }
            _ = inner.wake.notified() => {
                let outputs = std::mem::take(&mut *lock(&inner.pending));
                inner.deliver(&udp, outputs).await;
            }
            ready = udp.ready(Interest::ERROR), if watch_errors => {
                // The queue is read at the top of the next turn; this only clears the
                // runtime's error readiness, so that it does not fire again at once.
                watch_errors = ready.is_ok();
                let _ = udp.try_io(Interest::ERROR, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
            }
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        let served = tokio::time::timeout(STREAM_TIMEOUT, serve_stream(&inner, stream)).await;
                        if let Ok(Ok(outputs)) = served {
                            inner.submit(outputs);
                        }
                    });
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
        match decode_stream(&buf, inner.keyring().as_deref()) {
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
    let (nodes, user_state) = inner.core().push_pull_state();
    StreamMessage::PushPull(PushPull {
        join,
        nodes,
        user_state,
    })
}

/// A push/pull, a TCP ping or a bulk sync from another node; the outputs of merging it.
async fn serve_stream(inner: &Inner, mut stream: TcpStream) -> io::Result<Vec<Output>> {
    Ok(match read_message(inner, &mut stream).await? {
        StreamMessage::PushPull(theirs) => {
            write_message(inner, &mut stream, &our_push_pull(inner, false)).await?;
            let now = inner.now();
            inner.run(|core| core.merge_push_pull(now, theirs.nodes, &theirs.user_state))
        }
        StreamMessage::Ping(ping) => {
            let ack = StreamMessage::Ack(Ack {
                seq_no: ping.seq_no,
                payload: Vec::new(),
            });
            write_message(inner, &mut stream, &ack).await?;
            Vec::new()
        }
        StreamMessage::User(payload) => {
            let (answer, outputs) = {
                let now = inner.now();
                inner.step(|core| core.handle_stream(now, &payload))
            };
            if let Some(answer) = answer {
                write_message(inner, &mut stream, &StreamMessage::User(answer)).await?;
            }
            outputs
        }
        _ => Vec::new(),
    })
}

/// Our push/pull with `peer` (a join, or anti-entropy); the outputs of merging its answer.
async fn push_pull(inner: &Inner, peer: SocketAddr, join: bool) -> io::Result<Vec<Output>> {
    let exchange = async {
        let mut stream = TcpStream::connect(peer).await?;
        write_message(inner, &mut stream, &our_push_pull(inner, join)).await?;
        match read_message(inner, &mut stream).await? {
            StreamMessage::PushPull(theirs) => Ok(theirs),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a push/pull",
            )),
        }
    };
    let theirs = tokio::time::timeout(STREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let now = inner.now();
    Ok(inner.run(|core| core.merge_push_pull(now, theirs.nodes, &theirs.user_state)))
}

/// A stream user message (a bulk sync) to `peer`, and the handling of its answer.
async fn send_stream(inner: &Inner, peer: SocketAddr, payload: Vec<u8>) -> io::Result<Vec<Output>> {
    let exchange = async {
        let mut stream = TcpStream::connect(peer).await?;
        write_message(inner, &mut stream, &StreamMessage::User(payload)).await?;
        stream.shutdown().await?;
        match read_message(inner, &mut stream).await {
            Ok(StreamMessage::User(answer)) => Ok(Some(answer)),
            // No answer wanted, or none given: the peer closed the stream.
            Ok(_) | Err(_) => Ok::<_, io::Error>(None),
        }
    };
    let answer = tokio::time::timeout(STREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    Ok(match answer {
        Some(answer) => {
            let now = inner.now();
            inner.step(|core| core.handle_stream(now, &answer)).1
        }
        None => Vec::new(),
    })
}
