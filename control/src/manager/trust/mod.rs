//! Trust on 2377: the cluster CA, node certificates and the mTLS configurations, Docker's
//! model. `shoal init` makes a [`ClusterCa`]; its [`ClusterCa::digest`] goes into the join
//! tokens ([`super::tokens`]). A joining agent makes its own key and CSR ([`NodeKey`]), so its
//! private key never leaves it, reaches the manager with [`pinned_client_config`] (the server
//! is trusted only if it chains to a CA whose digest is the token's), and gets a
//! [`NodeCert`] whose CN is the node id and whose OU is the role. From then on it talks mTLS
//! ([`client_config`]); the manager reads who it is with [`peer_identity`].
//!
//! - [`ca`]: the CA, stored as PEM, and issuing from a CSR;
//! - [`identity`]: node ids, and who a certificate says its holder is;
//! - [`node_key`]: the agent's key pair and CSR;
//! - [`tls`]: rustls configurations (ring provider only, no process-wide provider), the pin.
//!
//! Sans clock: every time is an argument. Key pairs are drawn from the OS (ring's
//! `SystemRandom`): key material is never seeded.

pub mod ca;
pub mod identity;
pub mod node_key;
#[cfg(test)]
mod tests;
pub mod tls;

pub use ca::{ClusterCa, NodeCert};
pub use identity::NodeIdentity;
pub use node_key::NodeKey;
pub use tls::{
    client_config, peer_identity, pin_check, pinned_client_config, refusal, server_config,
};

/// The name every client asks for when it connects to a manager: on every manager's
/// certificate, whatever address it was reached on.
pub const MANAGER_SERVER_NAME: &str = "manager.shoal";
/// Node certificates carry `<node-id>.node.shoal` as a DNS SAN.
pub const NODE_DNS_SUFFIX: &str = ".node.shoal";
/// The CA's common name.
pub const CA_COMMON_NAME: &str = "shoal cluster CA";
/// The organisation on every certificate of the cluster.
pub const ORGANIZATION: &str = "shoal";
/// The OU of a manager's certificate (Docker's).
pub const OU_MANAGER: &str = "swarm-manager";
/// The OU of a worker's certificate (Docker's).
pub const OU_WORKER: &str = "swarm-worker";
/// How long the CA is valid (Docker's 20 years).
pub const CA_VALIDITY: std::time::Duration = std::time::Duration::from_secs(20 * 365 * 86_400);
/// How long a node certificate is valid (Docker's 90 days).
pub const NODE_VALIDITY: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);
/// Certificates start this long before `now`, for clocks that lag (Docker's one hour).
pub const BACKDATE: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Why a trust operation was refused: the object, the cause and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error(
        "the {what} is not usable ({cause}): it must be the PEM that `shoal init` stored; restore the manager's store from a backup, or start a new cluster with `shoal init` on an empty one"
    )]
    BadCa { what: &'static str, cause: String },
    #[error(
        "the cluster CA key does not belong to the CA certificate next to it: the manager's store is mixed up; restore it from a backup"
    )]
    CaKeyMismatch,
    #[error(
        "the certificate signing request is refused ({cause}): the agent must send the PEM CSR it made with its own key (NodeKey::generate); upgrade the agent if it is older than the manager"
    )]
    BadCsr { cause: String },
    #[error(
        "the node's key is {algorithm}, which a cluster certificate does not carry: the agent must make an ECDSA P-256 key (NodeKey::generate)"
    )]
    KeyAlgorithm { algorithm: String },
    #[error(
        "{id:?} is not a node id: one to 63 lower-case letters, digits or '-', not starting or ending with '-'"
    )]
    NodeId { id: String },
    #[error(
        "the {what} is not a usable certificate ({cause}): give the PEM (\"-----BEGIN CERTIFICATE-----\") that the manager issued"
    )]
    BadCert { what: &'static str, cause: String },
    #[error(
        "the {what} is not a usable private key ({cause}): give the PKCS#8 PEM (\"-----BEGIN PRIVATE KEY-----\") made with the certificate"
    )]
    BadKey { what: &'static str, cause: String },
    #[error(
        "the certificate says no shoal node identity ({cause}): only certificates issued by the cluster CA to a node are accepted; rejoin the node with `shoal join`"
    )]
    NotANode { cause: String },
    #[error(
        "the manager's CA certificate has digest {actual}, but the join token expects {expected}: this token is for another cluster (or the cluster was initialised again); get a token from this cluster with `shoal join-token worker` (or `manager`) on one of its managers"
    )]
    OtherCluster { expected: String, actual: String },
    #[error(
        "{expected:?} is not a CA digest (64 lower-case hex digits, as in the join token): copy the token again from `shoal join-token worker`"
    )]
    BadDigest { expected: String },
    #[error(
        "the time {unix_seconds} s after 1970-01-01 cannot be put on a certificate ({cause}): check the system clock of this host"
    )]
    Clock {
        unix_seconds: i128,
        cause: &'static str,
    },
    #[error("could not {what} ({cause}): this is a bug in shoal's trust module; report it")]
    Internal { what: &'static str, cause: String },
    #[error(
        "could not build the TLS configuration ({cause}): check the certificate and the key given to it belong together"
    )]
    Tls { cause: String },
}

/// Lower-case hex of the SHA-256 of `der`: a CA certificate's digest, as join tokens carry.
pub fn digest(der: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}
