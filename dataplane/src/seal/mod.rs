//! Per-frame sealing: ChaCha20-Poly1305, key epochs, replay windows.
//!
//! A sealed frame (see [`crate::wire::vxlan`]) is the inner Ethernet frame encrypted with the
//! network key of its epoch, nonce = sender id (4 bytes BE) ‖ counter (8 bytes BE), the 24
//! header bytes as associated data, and a detached 16-byte tag. Read RFC 8439 first.
//!
//! - [`replay`]: the sliding anti-replay window of one (sender, epoch).
//! - [`keyset`]: the keys of one network on one node, sealing and opening in place.
//!
//! No I/O, no clock, no randomness: the only per-node input that must differ across restarts
//! (the first counter) is passed in by the shell.

pub mod keyset;
pub mod replay;

pub use keyset::{KeyError, KeySet, NetworkKey, OpenError, SealError};

#[cfg(test)]
mod tests;
