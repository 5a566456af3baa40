//! Gossip on 7946: memberlist's wire protocol, so a HashiCorp Serf agent is a real peer.
//!
//! - [`deadlines`]: deadlines by member, in time order too;
//! - [`membership`]: SWIM with Lifeguard's suspicion, sans-IO;
//! - [`netdb`]: membership and tables composed with the messages that carry the tables
//!   (NetworkDB), sans-IO;
//! - [`shell`]: the core on UDP and TCP with memberlist's wire format;
//! - [`tables`]: network-scoped tables (NetworkDB's semantics), sans-IO;
//! - [`unreachable`]: the ICMP errors the network returns for our datagrams (the shell's);
//! - [`wire`]: the messages and their framing (msgpack, compound, CRC, LZW, AES-GCM keyring).

pub mod deadlines;
pub mod membership;
pub mod netdb;
pub mod shell;
pub mod tables;
pub mod unreachable;
pub mod wire;
