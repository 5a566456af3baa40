//! The thin manager's core: the desired state (nodes, networks, services, tasks), the address
//! management and the scheduling that realise it. Sans-IO: commands in, state out; the store,
//! the API on 2377 and trust come in their own shells.
//!
//! - [`model`]: the objects; [`command`]: what can be asked;
//! - [`state`]: applying a command whole, and reconciling tasks with it;
//! - [`ipam`]: subnets, addresses, VNIs, published ports;
//! - [`schedule`]: which node takes a task; [`constraint`]: placement constraints;
//! - [`error`]: refusals that name the object, the cause and the fix.

pub mod command;
pub mod constraint;
pub mod error;
pub mod ipam;
pub mod model;
pub mod schedule;
pub mod state;
#[cfg(test)]
mod tests;

pub use command::{Applied, Command};
pub use error::ManagerError;
pub use state::State;
