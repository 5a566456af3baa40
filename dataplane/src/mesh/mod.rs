//! The routing mesh, north-south: every published port listens on the node, and each
//! connection (or UDP client) is relayed from the node's **ingress sandbox** — a namespace with
//! one TAP on the ingress network, holding the node's ingress address — to the service's VIP
//! there, where the dataplane's balancer picks a task on any node. The task sees the sandbox's
//! address (optionally the real client in a PROXY v2 header). Docker does the same with an
//! `ingress-sbox` namespace, iptables and IPVS; here it is a userspace relay over kernel
//! sockets: back-pressure and half-close come from TCP itself.
//!
//! An I/O shell: one tokio thread that lives in the sandbox (so every socket it connects
//! comes from the ingress address); listeners are bound in the node's namespace and handed
//! to it.

pub mod proxy_v2;
mod stats;
mod tcp;
mod udp;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::shell::netns::{NetnsRef, in_netns, in_netns_or_current};
use stats::PortCounters;
pub use stats::PortStats;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One published port: where it listens on the node and where it relays to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub protocol: Protocol,
    /// The node-side address (`0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// The service's VIP and target port on the ingress network (mode ingress), or a task's
    /// address (mode host).
    pub target: SocketAddr,
    /// Send a PROXY protocol v2 header first, naming the real client.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// Limits of the relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// A backend that does not accept within this long: the client is closed.
    pub connect_timeout: Duration,
    /// Connections (TCP) or sessions (UDP) relayed at once per port; beyond, new ones are
    /// closed at once and counted.
    pub max_flows_per_port: usize,
    /// A UDP client silent this long loses its session.
    pub udp_idle: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            max_flows_per_port: 16_384,
            udp_idle: Duration::from_secs(60),
        }
    }
}

/// Why a port could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{protocol:?} port {port} is already published on this node: unpublish it first")]
    AlreadyPublished { protocol: Protocol, port: u16 },
    #[error(
        "cannot listen on {addr} ({protocol:?}): {source} (is another program using the port?)"
    )]
    Listen {
        protocol: Protocol,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// What the relay tasks of one published port share (the TCP and UDP relays are methods).
#[derive(Debug)]
struct Relay {
    spec: PublishedPort,
    config: MeshConfig,
    counters: Arc<PortCounters>,
}

#[derive(Debug)]
struct Published {
    spec: PublishedPort,
    counters: Arc<PortCounters>,
    task: tokio::task::JoinHandle<()>,
}

/// The routing mesh of one node.
#[derive(Debug)]
pub struct RoutingMesh {
    config: MeshConfig,
    /// Where listeners are bound (the node's namespace; `None`: the caller's).
    node_netns: Option<NetnsRef>,
    runtime: tokio::runtime::Handle,
    ports: Mutex<BTreeMap<(Protocol, u16), Published>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RoutingMesh {
    /// Starts the relay thread inside the ingress sandbox `sandbox`.
    pub fn start(
        sandbox: &NetnsRef,
        node_netns: Option<NetnsRef>,
        config: MeshConfig,
    ) -> io::Result<Self> {
        // A thread spawned from a thread inside the sandbox is born there too.
        let (runtime, stop, thread) = in_netns(sandbox, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("shoal-mesh".into())
                .spawn(move || {
                    let _ = rt.block_on(stopped);
                })?;
            Ok((handle, stop, thread))
        })?;
        Ok(Self {
            config,
            node_netns,
            runtime,
            ports: Mutex::new(BTreeMap::new()),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Starts listening on a published port.
    pub fn publish(&self, spec: PublishedPort) -> Result<(), PublishError> {
        let key = (spec.protocol, spec.listen.port());
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        if ports.contains_key(&key) {
            return Err(PublishError::AlreadyPublished {
                protocol: spec.protocol,
                port: key.1,
            });
        }
        let counters = Arc::new(PortCounters::default());
        let listen = spec.listen;
        let listen_error = |source| PublishError::Listen {
            protocol: spec.protocol,
            addr: listen,
            source,
        };
        let relay = Relay {
            spec: spec.clone(),
            config: self.config,
            counters: counters.clone(),
        };
        let task = match spec.protocol {
            Protocol::Tcp => {
                let listener =
                    in_netns_or_current(self.node_netns.as_ref(), move || tcp::bind(listen))
                        .map_err(listen_error)?;
                self.runtime.spawn(relay.serve_tcp(listener))
            }
            Protocol::Udp => {
                let socket =
                    in_netns_or_current(self.node_netns.as_ref(), move || udp::bind(listen))
                        .map_err(listen_error)?;
                self.runtime.spawn(relay.serve_udp(socket))
            }
        };
        ports.insert(
            key,
            Published {
                spec,
                counters,
                task,
            },
        );
        Ok(())
    }

    /// Stops listening; relays in progress are cut. False if the port was not published.
    pub fn unpublish(&self, protocol: Protocol, port: u16) -> bool {
        let removed = self
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(protocol, port));
        removed.map(|p| p.task.abort()).is_some()
    }

    /// Every published port with its counters.
    pub fn stats(&self) -> Vec<PortStats> {
        let ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        ports
            .values()
            .map(|p| p.counters.snapshot(&p.spec))
            .collect()
    }
}

impl Drop for RoutingMesh {
    fn drop(&mut self) {
        for (_, port) in std::mem::take(&mut *self.ports.lock().unwrap_or_else(|p| p.into_inner()))
        {
            port.task.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
