//! memberlist's wire format, sans I/O: the bytes a HashiCorp memberlist (and so Serf, Consul,
//! Docker's NetworkDB) puts on 7946/udp and 7946/tcp, and back.
//!
//! Nothing here opens a socket, reads a clock or draws a random number: the nonces that
//! encryption needs come in as arguments, so every function is a pure map from bytes to bytes
//! and can be fuzzed and replayed.
//!
//! Layers, outermost first, as `hashicorp/memberlist` (`net.go`, `util.go`, `security.go`,
//! `label.go`) builds them:
//!
//! | layer | packet (UDP) | stream (TCP) | module |
//! |---|---|---|---|
//! | label header `[244][len][label]` | optional | optional | [`frame`], [`stream`] |
//! | encryption | AES-GCM of the whole rest, AAD = label | `[10][u32 len]` + AES-GCM, AAD = those 5 bytes + label | [`keyring`] |
//! | checksum `[12][crc32 BE]` | if the receiver speaks protocol ≥ 5 | never | [`frame`] |
//! | compression `[9]{Algo, Buf}` (LZW) | optional, nests anywhere once | optional | [`frame`], [`lzw`] |
//! | compound `[7][n][n × u16 len][parts]` | optional | never | [`frame`] |
//! | message `[type][msgpack map]` | ping, ack, alive, … | push/pull, ping, ack, user, err | [`messages`], [`stream`] |
//!
//! Every decoder is bounded ([`MAX_PACKET`], [`MAX_STREAM`], [`MAX_PUSH_NODES`], one level of
//! compound, one of compression, an output cap on LZW) and returns a typed [`WireError`]
//! instead of panicking, whatever the input.

pub mod error;
pub mod frame;
pub mod keyring;
pub mod lzw;
pub mod messages;
mod msgpack;
pub mod stream;

#[cfg(test)]
mod tests;

pub use error::{KeyError, WireError};
pub use frame::{
    Packet, add_crc, add_label, compress, decode_packet, encode_compound, seal_packet,
    split_compound,
};
pub use keyring::{Key, Keyring, decrypt, encrypt, encrypt_legacy};
pub use messages::{
    Ack, Alive, Dead, ErrResp, IndirectPing, Message, MessageType, Nack, Ping, Suspect, Versions,
    decode, encode,
};
pub use stream::{
    NodeState, PushNodeState, PushPull, StreamFrame, StreamMessage, decode_stream, encode_stream,
    seal_stream,
};

/// Largest UDP payload we accept, and the budget for everything decompressed out of one
/// packet. memberlist never sends more than `UDPBufferSize` (1400 bytes) per packet, and no
/// UDP datagram exceeds 65,507 bytes, so 64 KiB only rejects what no peer can send.
pub const MAX_PACKET: usize = 64 * 1024;

/// Largest stream message (push/pull, user message) we accept, encrypted or decompressed.
/// memberlist caps remote state at 20 MiB (`maxPushStateBytes`); a swarm's node table is a
/// few hundred bytes per node, so 16 MiB is thousands of nodes with room to spare while a
/// peer cannot make us buffer without end.
pub const MAX_STREAM: usize = 16 * 1024 * 1024;

/// Most node states one push/pull may announce. memberlist allows 1 Mi; we never allocate
/// from this number (each state is parsed before it is stored), it only bounds the loop.
pub const MAX_PUSH_NODES: usize = 64 * 1024;

/// Largest node meta memberlist lets a node announce (`MetaMaxSize`); Serf puts its tags
/// there.
pub const META_MAX: usize = 512;

/// Longest label a header can carry: its length is one byte (`LabelMaxSize`).
pub const LABEL_MAX: usize = 255;
