//! shoal's control plane: gossip, the manager, the agent, the CLI, the CNI plugin, the lab.
//!
//! It composes `dataplane` and `dns`, which never depend on it.
//!
//! - [`gossip`]: memberlist-compatible membership and network-scoped tables (issue 3);
//! - [`agent`]: the node agent (its manager-facing half so far);
//! - [`cli`]: `shoal`, the manager process and its docker-like commands;
//! - [`manager`]: the desired state: nodes, networks, services, tasks; allocation and
//!   scheduling (issue 5).

pub mod agent;
pub mod cli;
pub mod gossip;
pub mod lab;
pub mod manager;
