//! Joining: the one route a caller without a certificate may use. The token says which
//! cluster and which role; the node sends a CSR (its key stays with it) and gets its
//! certificate, its node id and the CA certificate.

use std::net::Ipv4Addr;

use axum::Json;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::server::{AppState, refusal, status_of};
use crate::manager::Command;
use crate::manager::trust::ClusterCa;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub csr_pem: String,
    pub hostname: String,
    pub addr: Ipv4Addr,
    /// The node's labels (placement constraints match them).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: String,
    pub cert_pem: String,
    pub ca_cert_pem: String,
}

/// The join tokens as `shoal join-token` prints them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tokens {
    pub worker: String,
    pub manager: String,
}

/// 25 random lower-case letters and digits from the OS (a token secret, a node id).
pub fn secret() -> Result<String, String> {
    random_id(25)
}

fn random_id(len: usize) -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the OS random source failed".to_string())?;
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // 256 is not a multiple of 36: the slight bias is irrelevant for identifiers and leaves
    // each character ~5.1 bits of entropy (125 bits for a secret).
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % 36] as char)
        .collect())
}

#[allow(clippy::disallowed_methods)] // shell: a certificate's validity starts now
pub(super) async fn join(
    Extract(shared): Extract<AppState>,
    Json(request): Json<JoinRequest>,
) -> Response {
    let (role, ca) = {
        let manager = shared.lock();
        let Some(trust) = manager.trust() else {
            return refusal(StatusCode::BAD_REQUEST, "this manager runs without `shoal init` (--insecure): there is nothing to join with a token".into());
        };
        let role = match trust.tokens.check(&request.token) {
            Ok(role) => role,
            Err(e) => return refusal(StatusCode::FORBIDDEN, e.to_string()),
        };
        match ClusterCa::from_pem(&trust.ca_cert_pem, &trust.ca_key_pem) {
            Ok(ca) => (role, ca),
            Err(e) => return refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    };
    let node_id = match random_id(12) {
        Ok(id) => id,
        Err(e) => return refusal(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let cert = match ca.issue(
        &request.csr_pem,
        &node_id,
        role,
        std::time::SystemTime::now(),
    ) {
        Ok(cert) => cert,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let add = Command::AddNode {
        id: node_id.clone(),
        hostname: request.hostname,
        role,
        addr: request.addr,
        labels: request.labels,
    };
    if let Err(e) = shared.apply(add) {
        return refusal(status_of(&e), e.to_string());
    }
    Json(JoinResponse {
        node_id,
        cert_pem: cert.cert_pem,
        ca_cert_pem: ca.cert_pem().to_owned(),
    })
    .into_response()
}
