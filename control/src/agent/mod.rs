//! The node agent. Today only its manager-facing half exists: [`follower`] follows the
//! manager's stream for its node and reports what became of its tasks. Composing the
//! dataplane, gossip, DNS and the task runtime is issue 7.

pub mod follower;
