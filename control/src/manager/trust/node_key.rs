//! The agent's side of issuing: it makes its own key pair and a CSR for it, sends the CSR
//! with its join token, and keeps the private key to itself.

use std::fmt;

use rcgen::{CertificateParams, DnType, KeyPair};

use super::TrustError;

/// A node's key pair (PKCS#8 PEM) and the CSR (PEM) that asks the CA to certify it.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeKey {
    pub key_pem: String,
    pub csr_pem: String,
}

impl fmt::Debug for NodeKey {
    // The key is a secret: logs show the request, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("key_pem", &"[elided]")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

impl NodeKey {
    /// A fresh ECDSA P-256 key pair and a CSR for it with `requested_name` as its CN (the
    /// node's id when it renews, its hostname when it joins: the manager decides the id the
    /// certificate carries, whatever the CSR asks).
    pub fn generate(requested_name: &str) -> Result<NodeKey, TrustError> {
        let internal = |what| {
            move |e: rcgen::Error| TrustError::Internal {
                what,
                cause: e.to_string(),
            }
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(internal("generate the node key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, requested_name);
        let csr = params
            .serialize_request(&key)
            .map_err(internal("make the certificate signing request"))?;
        Ok(NodeKey {
            key_pem: key.serialize_pem(),
            csr_pem: csr
                .pem()
                .map_err(internal("encode the certificate signing request"))?,
        })
    }
}
