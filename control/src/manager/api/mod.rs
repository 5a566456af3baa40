//! The manager's HTTP JSON API (on 2377 by default) and a small client for the CLI and the
//! agent.
//!
//! - `POST /v1/commands`: one [`Command`](super::Command), applied whole: the
//!   [`Applied`](super::Applied) result, or the refusal as `{"error": "..."}` with 404 (not
//!   found), 409 (exists, in use) or 400;
//! - `POST /v1/stacks/{name}`: a compose file's text, deployed (networks that exist are kept);
//! - `GET /v1/state`: the whole state (what `ls`, `ps` and `inspect` render);
//! - `GET /v1/nodes/{node}/view?after=REV`: the node's view once the revision is past `REV`
//!   (waits up to [`LONG_POLL`]): the agent's stream, resumable from the last revision it saw.
//!
//! - `POST /v1/join`: a token and a CSR in, the node's certificate out: the only route a
//!   caller without a client certificate may use;
//! - `GET /v1/join-tokens`, `POST /v1/join-tokens/{role}/rotate`: managers only.
//!
//! TLS with client certificates of the cluster CA ([`TlsListener`]); plain HTTP only for a
//! manager started `--insecure` ([`PlainListener`]).

mod client;
pub mod join;
pub mod listener;
mod server;

pub(crate) use client::exchange;
pub use client::{ApiClient, ClientError};
pub use listener::{Caller, Peer, PlainListener, TlsListener};
pub use server::{ApiError, ServeOptions, serve};

/// A key for the gossip keyring from the OS (what `shoal init` starts the keyring with).
pub fn fresh_gossip_key() -> Result<crate::manager::keys::KeyBytes, crate::manager::ApplyError> {
    server::fresh_key()
}

/// How long a view request waits for a new revision before answering with the current one.
pub const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(25);
