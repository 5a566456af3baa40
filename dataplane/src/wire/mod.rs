//! Wire views of our own formats and in-place header rewrites.
//!
//! - [`vxlan`]: the plain (RFC 7348) and sealed VXLAN headers, parsed from untrusted
//!   datagrams through checked views and emitted into fixed-size buffers.
//! - [`checksum`]: in-place IPv4/TCP/UDP address and port rewrites and MSS clamping, with
//!   RFC 1624 incremental checksum updates.
//! - [`offload`]: the virtio-net header of offloading TAPs, TCP segmentation of TSO frames
//!   and coalescing of received segments (userspace GSO/GRO).
//!
//! Ethernet, IPv4, TCP and UDP are parsed with etherparse where a full parse is needed; these
//! modules only cover our formats and the hot-path rewrites. Nothing here panics on any input.

pub mod checksum;
pub mod offload;
pub mod vxlan;

#[cfg(test)]
mod tests;
