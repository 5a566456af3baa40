//! The resolver's I/O: one tokio thread serving every endpoint's listeners, the records behind
//! a lock that updates swap whole, and the forwarder.
//!
//! Namespaces are the caller's business: bind [`ListenSockets`] on a thread inside the
//! container's namespace (the dataplane's `in_netns` does that), then hand them to
//! [`DnsServer::add_endpoint`]. The sockets stay in that namespace wherever they are used.

mod counters;
mod forward;
mod listen;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle as TaskHandle;

use counters::Counters;
pub use counters::{Counter, DnsStats};
use listen::EndpointCtx;

use crate::answer::{Scope, Ttls};
use crate::index::Snapshot;
use crate::records::{Records, Update, UpdateError};
use crate::upstream::parse_resolv_conf;

/// Docker's address for the embedded resolver.
pub const RESOLVER_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// How the resolver behaves. The defaults are Docker's where Docker is right.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    pub ttls: Ttls,
    /// The upstream resolvers; `None` reads the host's /etc/resolv.conf at start.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// How long one upstream gets before the next is tried. Docker waits 4 s per try, so three
    /// dead upstreams outlast glibc's own 5 s timeout and the client sees nothing; 1.5 s keeps
    /// a whole forward inside it.
    pub forward_timeout: Duration,
    /// Forwards in flight per endpoint; beyond it a query is REFUSED at once (Docker: 1024).
    pub max_forwards: usize,
    /// Open TCP connections per endpoint; more are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection with no query for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            ttls: Ttls::default(),
            upstreams: None,
            forward_timeout: Duration::from_millis(1500),
            max_forwards: 1024,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What every listener reads.
#[derive(Debug)]
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    counters: Counters,
    config: DnsConfig,
    upstreams: Vec<SocketAddr>,
}

/// The UDP and TCP sockets of one endpoint, bound where the caller's thread is.
#[derive(Debug)]
pub struct ListenSockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl ListenSockets {
    /// Binds UDP and TCP on `addr` in the calling thread's network namespace.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let explain = |e: io::Error| {
            let hint = if e.kind() == io::ErrorKind::AddrNotAvailable {
                " (is the loopback interface up in this namespace? `ip link set lo up`)"
            } else if e.kind() == io::ErrorKind::AddrInUse {
                " (another resolver already listens there)"
            } else {
                ""
            };
            io::Error::new(e.kind(), format!("dns: cannot bind {addr}: {e}{hint}"))
        };
        let udp = std::net::UdpSocket::bind(addr).map_err(explain)?;
        udp.set_nonblocking(true)?;
        let tcp = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        tcp.set_reuse_address(true)?;
        tcp.bind(&addr.into()).map_err(explain)?;
        tcp.listen(128)?;
        tcp.set_nonblocking(true)?;
        Ok(Self {
            udp,
            tcp: tcp.into(),
        })
    }
}

/// Why an endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("dns: endpoint {0:?} is already served; remove it first")]
    AlreadyServed(String),
}

#[derive(Debug)]
struct Endpoint {
    ctx: Arc<EndpointCtx>,
    tasks: [TaskHandle<()>; 2],
}

/// The resolver: records, endpoints, and the thread that serves them.
#[derive(Debug)]
pub struct DnsServer {
    shared: Arc<Shared>,
    records: Mutex<Records>,
    endpoints: Mutex<BTreeMap<String, Endpoint>>,
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Starts the serving thread. It stays in the caller's network namespace: forwards leave
    /// from there, as Docker's do from the host's.
    pub fn start(config: DnsConfig) -> io::Result<Self> {
        let upstreams = match &config.upstreams {
            Some(list) => list.clone(),
            None => {
                parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shoal-dns".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        let shared = Shared {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            counters: Counters::default(),
            config,
            upstreams,
        };
        Ok(Self {
            shared: Arc::new(shared),
            records: Mutex::new(Records::new()),
            endpoints: Mutex::new(BTreeMap::new()),
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Applies a change to the records; every endpoint answers from it with its next query.
    pub fn apply(&self, update: Update) -> Result<(), UpdateError> {
        let mut records = lock(&self.records);
        records.apply(update)?;
        let snapshot = Arc::new(records.snapshot());
        *self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner()) = snapshot;
        Ok(())
    }

    /// Serves an endpoint on its sockets with its scope.
    pub fn add_endpoint(
        &self,
        id: &str,
        sockets: ListenSockets,
        scope: Scope,
    ) -> Result<(), EndpointError> {
        let mut endpoints = lock(&self.endpoints);
        if endpoints.contains_key(id) {
            return Err(EndpointError::AlreadyServed(id.to_owned()));
        }
        let ctx = Arc::new(EndpointCtx {
            shared: self.shared.clone(),
            scope: RwLock::new(Arc::new(scope)),
            forwards: Arc::new(Semaphore::new(self.shared.config.max_forwards)),
        });
        let tasks = [
            self.runtime
                .spawn(listen::serve_udp(ctx.clone(), sockets.udp)),
            self.runtime
                .spawn(listen::serve_tcp(ctx.clone(), sockets.tcp)),
        ];
        endpoints.insert(id.to_owned(), Endpoint { ctx, tasks });
        Ok(())
    }

    /// Changes which networks an endpoint sees (it attached to or left a network).
    pub fn set_scope(&self, id: &str, scope: Scope) -> bool {
        let endpoints = lock(&self.endpoints);
        let Some(endpoint) = endpoints.get(id) else {
            return false;
        };
        *endpoint
            .ctx
            .scope
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(scope);
        true
    }

    /// Stops an endpoint's listeners; its sockets close. False if it was not served.
    pub fn remove_endpoint(&self, id: &str) -> bool {
        let removed = lock(&self.endpoints).remove(id);
        removed
            .map(|endpoint| endpoint.tasks.iter().for_each(|t| t.abort()))
            .is_some()
    }

    pub fn endpoints(&self) -> Vec<String> {
        lock(&self.endpoints).keys().cloned().collect()
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.shared.upstreams
    }

    pub fn stats(&self) -> DnsStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for (_, endpoint) in std::mem::take(&mut *lock(&self.endpoints)) {
            endpoint.tasks.iter().for_each(|t| t.abort());
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A poisoned lock still guards whole values here (every change is one assignment).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
