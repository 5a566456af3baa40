//! shoal's control plane: gossip, the manager, the agent, the CLI, the CNI plugin, the lab.
//!
//! Not built yet: the gossip, manager and agent issues grow it. It composes `dataplane` and
//! `dns`, which never depend on it.
