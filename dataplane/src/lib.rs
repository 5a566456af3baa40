//! shoal's packet path.
//!
//! What it is: the wire views of our formats (VXLAN, sealed VXLAN), in-place header rewrites
//! with incremental checksums, the per-frame AEAD with key epochs and replay windows, the
//! forwarding core that decides what happens to every frame, and the I/O shell that moves
//! frames between TAP devices and the UDP socket on 4789.
//!
//! What it is not: the cores (`wire`, `seal`, `forward`) do no I/O, read no clock and draw no
//! randomness; time comes in as [`types::Timestamp`]. Only `shell` touches file descriptors,
//! threads and namespaces.
//!
//! Read first: RFC 7348 (VXLAN), RFC 8439 (ChaCha20-Poly1305), RFC 1624 (incremental
//! checksum update), then `../shared/DESIGN.md` ("The data path", "Wire formats").

pub mod balance;
pub mod forward;
pub mod mesh;
pub mod seal;
pub mod shell;
pub mod types;
pub mod wire;
