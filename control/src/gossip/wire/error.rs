//! What can be wrong with bytes from the wire. Decoding never changes any state, so every
//! error only says the input was refused; [`WireError::kind`] names the cause in a form fit
//! for a counter label (`gossip_decode_errors_total{kind="checksum"}`).

use thiserror::Error;

/// Why a packet, stream or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The packet or message had no bytes at all.
    #[error("empty message")]
    Empty,
    /// A stream needs more bytes before it can be decoded: read more and call again. Only
    /// [`decode_stream`](super::decode_stream) returns it, and only when the bytes so far are
    /// a valid prefix.
    #[error("incomplete stream: more bytes needed")]
    Incomplete,
    /// The bytes end before a length, header or value they announced.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length is over our limit (see the `MAX_*` constants).
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A message type byte memberlist does not define.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A defined message type where it cannot appear (a push/pull in a packet, a checksum
    /// inside a compound, an alive on a stream).
    #[error("message type {got} is not valid in {context}")]
    UnexpectedType { got: u8, context: &'static str },
    /// A compound inside a compound, or a compressed payload inside a compressed payload:
    /// memberlist never builds either, and refusing them bounds the work per packet.
    #[error("{0} nested more than once")]
    Nested(&'static str),
    /// Some parts of a compound were cut off; the parts before them were decoded.
    #[error("{0} compound parts truncated")]
    CompoundTruncated(usize),
    /// The msgpack body is not what the message type requires.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A name or string field is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// An address field is neither 4 nor 16 bytes.
    #[error("{field} is {len} bytes, not an IPv4 or IPv6 address")]
    Address { field: &'static str, len: usize },
    /// The CRC32 of a checksummed packet does not match its contents.
    #[error("checksum mismatch: header says {expected:08x}, contents give {actual:08x}")]
    Checksum { expected: u32, actual: u32 },
    /// Compressed with an algorithm other than LZW (0).
    #[error("unknown compression algorithm {0}")]
    CompressionAlgo(u64),
    /// The LZW stream is corrupt (a code beyond the table, no end code).
    #[error("lzw: {0}")]
    Lzw(&'static str),
    /// A label header with a zero length (memberlist refuses it), or a label over 255 bytes
    /// to send.
    #[error("invalid label: {0}")]
    Label(&'static str),
    /// Encrypted with a version other than 0 (PKCS7-padded) or 1.
    #[error("unsupported encryption version {0}")]
    EncryptionVersion(u8),
    /// None of the keys opened the message (wrong key, wrong label, or altered bytes).
    #[error("no installed key could decrypt the message")]
    Decrypt,
    /// Version-0 padding that is not PKCS7.
    #[error("invalid PKCS7 padding")]
    Padding,
    /// An encrypted stream arrived but no keyring was given.
    #[error("remote stream is encrypted and encryption is not configured")]
    NotConfigured,
    /// A plaintext stream arrived but a keyring was given: memberlist refuses it by default
    /// (`GossipVerifyIncoming`); a shell that tolerates plaintext decodes again without keys.
    #[error("encryption is configured but the remote stream is not encrypted")]
    NotEncrypted,
}

impl WireError {
    /// A short, stable, snake_case name of the cause, for metrics labels and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Incomplete => "incomplete",
            Self::Truncated(_) => "truncated",
            Self::TooLarge { .. } => "too_large",
            Self::UnknownType(_) => "unknown_type",
            Self::UnexpectedType { .. } => "unexpected_type",
            Self::Nested(_) => "nested",
            Self::CompoundTruncated(_) => "compound_truncated",
            Self::Malformed(_) => "malformed",
            Self::Utf8(_) => "utf8",
            Self::Address { .. } => "address",
            Self::Checksum { .. } => "checksum",
            Self::CompressionAlgo(_) => "compression_algo",
            Self::Lzw(_) => "lzw",
            Self::Label(_) => "label",
            Self::EncryptionVersion(_) => "encryption_version",
            Self::Decrypt => "decrypt",
            Self::Padding => "padding",
            Self::NotConfigured => "not_configured",
            Self::NotEncrypted => "not_encrypted",
        }
    }
}

/// Why a key was refused (configuration, not wire).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// memberlist's keys are AES-128, -192 or -256 keys: 16, 24 or 32 bytes.
    #[error("gossip key is {0} bytes: it must be 16, 24 or 32 bytes (AES-128, -192 or -256)")]
    Length(usize),
    /// Serf's `-encrypt` value is standard base64 (with padding).
    #[error("gossip key is not valid base64: give it as `serf keygen` prints it")]
    Base64,
}
