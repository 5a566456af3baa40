//! The I/O shell: namespaces, TAP devices, the overlay UDP socket, the forwarding thread.
//!
//! - [`netns`]: name a network namespace, run a closure or rtnetlink requests inside it (always
//!   on a dedicated OS thread, never on a tokio worker).
//! - [`tap`]: create and configure a container's TAP device inside its namespace.
//! - [`udp`]: the overlay UDP socket and preallocated `recvmmsg`/`sendmmsg` batches.
//! - [`runtime`]: a node's running dataplane: the handle, its config, live updates, counters.
//! - `worker`: the forwarding thread (epoll, batches, TSO segmentation, busy-polling);
//!   `egress`: writes into TAPs, merging TCP segments per endpoint.
//! - [`link`]: underlay facts (the MTU of the interface holding an address).
//! - [`netlink`]: small rtnetlink helpers the others share.

mod egress;
pub mod gwbridge;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod runtime;
pub mod tap;
pub mod udp;
mod worker;
