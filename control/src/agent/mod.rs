//! The node agent. What exists so far:
//!
//! - [`follower`]: follows the manager's stream for its node and reports what became of its
//!   tasks;
//! - [`runtime`]: the process task runtime: runs a task's command in the task's network
//!   namespace with its own mount and UTS namespaces (resolv.conf pointing at 127.0.0.11),
//!   stops it with connection and termination graces, watches its exit and its health, and
//!   decides restarts;
//! - [`peers`]: the overlay peer table: local endpoints as gossip entries, remote ones into
//!   the dataplane's routes (tolerating an IP briefly held by two endpoints);
//! - [`services`]: the service table: a node's tasks as gossip entries, folded on every
//!   node into the VIPs' backends and the resolver's service records;
//! - [`whoami`]: `shoal whoami`, the probe server a task runs by default: it says which
//!   task and node served a connection (HTTP) or echoes it.
//!
//! - [`node`]: `shoal agent` itself: the manager's view, the dataplane, the resolver, gossip
//!   and the runtime composed into one node.

pub mod follower;
pub mod node;
pub mod peers;
pub mod runtime;
pub mod services;
pub mod whoami;
