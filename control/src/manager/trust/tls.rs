//! rustls configurations for 2377, on the ring provider given to each builder (no
//! process-wide provider, no aws-lc-rs), and the CA pin a joining agent checks.
//!
//! - The manager serves with [`server_config`]: a client certificate is verified against the
//!   cluster CA when one is presented, and a client without one is let through the handshake
//!   (it has to reach the join endpoint before it has a certificate); the API then refuses
//!   everything but join to a connection whose [`peer_identity`] is `None`.
//! - A joining agent connects with [`pinned_client_config`]: the manager is trusted only if it
//!   chains to a CA whose digest is the one in the join token, so the token's secret is never
//!   sent to another cluster's manager (or a man in the middle).
//! - A member connects with [`client_config`], trusting only the cluster CA, with its node
//!   certificate. Clients ask for [`MANAGER_SERVER_NAME`](super::MANAGER_SERVER_NAME) (or the
//!   IP address they dial, which the manager's certificate carries too).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
};

use super::{NodeIdentity, TrustError, digest};

/// The ring provider every configuration here is built with.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The manager's server configuration: its certificate (sent with the CA certificate, for
/// [`pinned_client_config`]) and key, and client certificates verified against the CA when
/// presented, optional otherwise.
pub fn server_config(
    ca_cert_pem: &str,
    manager_cert_pem: &str,
    manager_key_pem: &str,
) -> Result<ServerConfig, TrustError> {
    let ca = cert_from_pem(ca_cert_pem, "cluster CA certificate")?;
    let cert = cert_from_pem(manager_cert_pem, "manager certificate")?;
    let key = key_from_pem(manager_key_pem, "manager key")?;
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&ca)?, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(tls)?;
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, ca], key)
        .map_err(tls)
}

/// Who the client of a finished handshake is: `None` if it presented no certificate (only
/// join may be asked then). A presented certificate has been verified against the CA by the
/// handshake already.
pub fn peer_identity(connection: &ServerConnection) -> Option<NodeIdentity> {
    let end_entity = connection.peer_certificates()?.first()?;
    NodeIdentity::from_der(end_entity).ok()
}

/// A member's client configuration: only the cluster CA is trusted; `identity` is the node's
/// certificate and key (PEM), `None` before it has them.
pub fn client_config(
    ca_cert_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<ClientConfig, TrustError> {
    let ca = cert_from_pem(ca_cert_pem, "cluster CA certificate")?;
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_root_certificates(roots(&ca)?);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let cert = cert_from_pem(cert_pem, "node certificate")?;
            let key = key_from_pem(key_pem, "node key")?;
            builder.with_client_auth_cert(vec![cert], key).map_err(tls)
        }
    }
}

/// A joining agent's client configuration: the manager is trusted only if the certificates
/// it sends include a CA whose digest is `expected_digest` (the join token's) and its own
/// certificate chains to that CA. Otherwise the handshake fails with
/// [`TrustError::OtherCluster`] inside rustls' error.
pub fn pinned_client_config(expected_digest: &str) -> Result<ClientConfig, TrustError> {
    check_digest(expected_digest)?;
    let provider = crypto_provider();
    let verifier = PinnedCa {
        expected: expected_digest.to_owned(),
        provider: provider.clone(),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Checks that a CA certificate (PEM, as the manager handed it out) is the one the join token
/// names by its digest, before the agent trusts and stores it.
pub fn pin_check(ca_cert_pem: &str, expected_digest: &str) -> Result<(), TrustError> {
    check_digest(expected_digest)?;
    let ca = cert_from_pem(ca_cert_pem, "manager's CA certificate")?;
    let actual = digest(&ca);
    if actual == expected_digest {
        Ok(())
    } else {
        Err(TrustError::OtherCluster {
            expected: expected_digest.to_owned(),
            actual,
        })
    }
}

/// The trust refusal inside a failed handshake's error, if that is why it failed: a joining
/// agent shows [`TrustError::OtherCluster`] from [`pinned_client_config`] this way (rustls
/// itself prints only its debug form). Takes tokio-rustls' `io::Error` or a `rustls::Error`.
pub fn refusal<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e TrustError> {
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        let inner: &(dyn std::error::Error + 'static) = io.get_ref()?;
        return refusal(inner);
    }
    match err.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<TrustError>()
        }
        _ => None,
    }
}

fn check_digest(expected: &str) -> Result<(), TrustError> {
    let hex = expected.len() == 64
        && expected
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        Ok(())
    } else {
        Err(TrustError::BadDigest {
            expected: expected.to_owned(),
        })
    }
}

/// Trusts the CA the server sends if, and only if, its digest is the expected one.
#[derive(Debug)]
struct PinnedCa {
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| digest(c) == self.expected) else {
            let actual = intermediates.last().map_or_else(
                || "none (the server sent no CA certificate)".to_owned(),
                |c| digest(c),
            );
            let refusal = TrustError::OtherCluster {
                expected: self.expected.clone(),
                actual,
            };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(refusal)),
            )));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TrustError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| TrustError::BadCert {
        what: "cluster CA certificate",
        cause: e.to_string(),
    })?;
    Ok(Arc::new(roots))
}

fn cert_from_pem(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, TrustError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| TrustError::BadCert {
        what,
        cause: e.to_string(),
    })
}

fn key_from_pem(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TrustError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TrustError::BadKey {
        what,
        cause: e.to_string(),
    })
}

fn tls(e: impl std::fmt::Display) -> TrustError {
    TrustError::Tls {
        cause: e.to_string(),
    }
}
