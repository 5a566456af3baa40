//! shoal's service-discovery resolver: the names of a container's networks at 127.0.0.11.
//!
//! - [`records`]: what the agent tells us (networks, services, tasks, containers) as updates;
//! - [`index`]: per-network lookup tables and Docker's lookup order;
//! - [`answer`]: the sans-IO core, query bytes in, reply bytes (or "forward") out;
//! - [`upstream`]: the sans-IO half of forwarding (resolv.conf, judging upstream replies);
//! - [`shell`]: the listeners inside container namespaces and the forwarder, on tokio.

pub mod answer;
pub mod index;
pub mod records;
pub mod shell;
pub mod upstream;

pub use answer::{Outcome, ReplyKind, Scope, Transport, Ttls, answer};
pub use records::{
    ContainerRecord, EndpointMode, PortProtocol, PortRecord, Records, ServiceRecord, TaskRecord,
    Update, UpdateError,
};
pub use shell::{DnsConfig, DnsServer, DnsStats};
