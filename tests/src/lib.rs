//! Cross-crate integration tests and their helpers.
//!
//! - [`testbed`]: nodes and containers as network namespaces on one host (needs root), removed
//!   on drop, also when the test panics.
//! - [`frames`]: hand-built Ethernet/ARP frames for tests that talk to a TAP directly.
//! - [`dns_upstream`]: a stub upstream resolver with a fixed zone, for the DNS tests.
//! - [`cluster`]: an overlay cluster on the testbed: a dataplane per node, TAPs per container.
//! - [`traffic`]: real kernel TCP traffic inside namespaces (echo server, bulk echo).
//! - [`gossip_sim`]: many gossip cores (NetworkDB) on a virtual network and a virtual clock,
//!   deterministic from a seed (no root, no sockets).
//! - [`swarm`]: a shoal cluster of real processes (manager, agents) on the testbed.
//! - [`kernel_vxlan`]: a Linux kernel `vxlan` device in a namespace, with static FDB and
//!   neighbour entries (interop tests, the overlay benchmark's kernel VXLAN path).

pub mod cluster;
pub mod dns_upstream;
pub mod frames;
pub mod gossip_sim;
pub mod kernel_vxlan;
pub mod swarm;
pub mod testbed;
pub mod traffic;

pub use testbed::{Container, Node, Testbed, wait_until};
