//! The thin manager's core: the desired state (nodes, networks, services, tasks), the address
//! management and the scheduling that realise it. Sans-IO but for [`store`]: commands in, state
//! out; the API on 2377 and trust come in their own shells.
//!
//! - [`api`]: the HTTP JSON API on 2377 and its client;
//! - [`model`]: the objects; [`command`]: what can be asked;
//! - [`state`]: applying a command whole, and reconciling tasks with it;
//! - [`ipam`]: subnets, addresses, VNIs, published ports;
//! - [`schedule`]: which node takes a task; [`constraint`]: placement constraints;
//! - [`error`]: refusals that name the object, the cause and the fix;
//! - [`compose`]: `stack deploy`'s compose files;
//! - [`keys`]: encrypted networks' key sets and their hitless rotation;
//! - [`view`]: what one node is told (its networks and their keys, its tasks, the services);
//! - [`tokens`]: join tokens (`SHTKN-1-<CA digest>-<secret>`), checked and rotated;
//! - [`trust`]: the cluster CA, node certificates (id in the CN, role in the OU), mTLS configs;
//! - [`store`]: the state kept in redb across restarts.

pub mod api;
pub mod command;
pub mod compose;
pub mod constraint;
pub mod error;
pub mod ipam;
pub mod keys;
pub mod model;
pub mod schedule;
pub mod state;
pub mod store;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod trust;
pub mod view;

pub use command::{Applied, Command};
pub use error::ManagerError;
pub use state::State;
pub use store::{ApplyError, Manager};
