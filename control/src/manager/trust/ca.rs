//! The cluster CA: made once by `shoal init`, kept as PEM in the manager's store, and issuing
//! node certificates from the nodes' CSRs. A CSR is used for its public key only (and its
//! signature, which proves the node holds the private key): the node id, the role and the
//! names come from the manager, never from what the CSR asks for.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{NodeIdentity, check_node_id};
use super::{
    BACKDATE, CA_COMMON_NAME, CA_VALIDITY, MANAGER_SERVER_NAME, NODE_DNS_SUFFIX, NODE_VALIDITY,
    ORGANIZATION, OU_MANAGER, OU_WORKER, TrustError,
};
use crate::manager::model::Role;

/// The cluster's certificate authority: its certificate and its signing key.
pub struct ClusterCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    digest: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    // The key is a secret: logs show which CA, never its key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterCa({})", self.digest)
    }
}

/// A certificate issued to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCert {
    pub cert_pem: String,
    pub identity: NodeIdentity,
    /// When it expires: the agent renews well before.
    pub not_after: SystemTime,
}

impl ClusterCa {
    /// A new CA (ECDSA P-256, CN "shoal cluster CA", valid [`CA_VALIDITY`] from `now`).
    pub fn generate(now: SystemTime) -> Result<ClusterCa, TrustError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(internal("generate the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(CA_COMMON_NAME, None);
        // Path length 0: it signs node certificates, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = validity(now, CA_VALIDITY)?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial(&[key.der_bytes(), CA_COMMON_NAME.as_bytes()], now));
        let cert = params
            .self_signed(&key)
            .map_err(internal("self-sign the CA certificate"))?;
        ClusterCa::assemble(cert.der().clone(), key)
    }

    /// The CA as `shoal init` stored it: its certificate and its key, both PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TrustError> {
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TrustError::BadCa {
                what: "cluster CA certificate",
                cause: e.to_string(),
            })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| TrustError::BadCa {
            what: "cluster CA key",
            cause: e.to_string(),
        })?;
        ClusterCa::assemble(cert_der, key)
    }

    fn assemble(cert_der: CertificateDer<'static>, key: KeyPair) -> Result<ClusterCa, TrustError> {
        let bad = |cause: &str| TrustError::BadCa {
            what: "cluster CA certificate",
            cause: cause.to_owned(),
        };
        let (rest, cert) = X509Certificate::from_der(&cert_der).map_err(|e| bad(&e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after it"));
        }
        if !cert.is_ca() {
            return Err(bad("it is not a CA certificate"));
        }
        // A stored certificate altered anywhere (its names included, which it lends to every
        // certificate it issues) no longer carries its own signature.
        cert.verify_signature(None)
            .map_err(|_| bad("its self-signature does not hold: it was altered"))?;
        if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(TrustError::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| bad(&e.to_string()))?;
        Ok(ClusterCa {
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            digest: super::digest(&cert_der),
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM: what every node trusts, and what the store keeps.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA key, PKCS#8 PEM: for the manager's store only.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Lower-case hex SHA-256 of the CA certificate's DER: what join tokens carry.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// A certificate for node `node_id` joining as `role`, for the key of `csr_pem` (the
    /// CSR's signature is checked; what it asks for besides its key is ignored). Valid
    /// [`NODE_VALIDITY`] from `now`. The certificate serves both as a client and a server.
    pub fn issue(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        now: SystemTime,
    ) -> Result<NodeCert, TrustError> {
        self.sign(csr_pem, node_id, role, Vec::new(), now)
    }

    /// A manager's certificate: a manager node's, plus the names clients reach it by:
    /// [`MANAGER_SERVER_NAME`] and the `addresses` it listens on (e.g. 127.0.0.1 and its
    /// advertise address).
    pub fn issue_manager(
        &self,
        csr_pem: &str,
        node_id: &str,
        addresses: &[IpAddr],
        now: SystemTime,
    ) -> Result<NodeCert, TrustError> {
        let manager_name = MANAGER_SERVER_NAME
            .try_into()
            .map_err(internal("name the manager"))?;
        let mut names = vec![SanType::DnsName(manager_name)];
        names.extend(addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        self.sign(csr_pem, node_id, Role::Manager, names, now)
    }

    fn sign(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        extra_names: Vec<SanType>,
        now: SystemTime,
    ) -> Result<NodeCert, TrustError> {
        check_node_id(node_id)?;
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| TrustError::BadCsr {
                cause: e.to_string(),
            })?;
        let algorithm = csr.public_key.algorithm();
        let accepted = [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ];
        if !accepted.contains(&algorithm) {
            return Err(TrustError::KeyAlgorithm {
                algorithm: format!("{algorithm:?}"),
            });
        }
        let ou = match role {
            Role::Manager => OU_MANAGER,
            Role::Worker => OU_WORKER,
        };
        let node_name = format!("{node_id}{NODE_DNS_SUFFIX}")
            .try_into()
            .map_err(internal("name the node"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(node_id, Some(ou));
        params.subject_alt_names = vec![SanType::DnsName(node_name)];
        params.subject_alt_names.extend(extra_names);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = validity(now, NODE_VALIDITY)?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial(
            &[
                csr.public_key.der_bytes(),
                node_id.as_bytes(),
                ou.as_bytes(),
            ],
            now,
        ));
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(internal("sign the node certificate"))?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            identity: NodeIdentity {
                node_id: node_id.to_owned(),
                role,
            },
            not_after: UNIX_EPOCH
                + Duration::from_secs(u64::try_from(not_after.unix_timestamp()).unwrap_or(0)),
        })
    }
}

fn name(common_name: &str, unit: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    if let Some(unit) = unit {
        dn.push(DnType::OrganizationalUnitName, unit);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// `now` less [`BACKDATE`], and `now` plus `span`; refused if a certificate cannot carry them.
fn validity(
    now: SystemTime,
    span: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), TrustError> {
    let clock = |cause| TrustError::Clock {
        unix_seconds: match now.duration_since(UNIX_EPOCH) {
            Ok(after) => i128::from(after.as_secs()),
            Err(before) => -i128::from(before.duration().as_secs()),
        },
        cause,
    };
    let since = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| clock("it is before 1970"))?;
    let far = "it is too far in the future";
    let from = since.checked_sub(BACKDATE).unwrap_or_default();
    let to = since.checked_add(span).ok_or(clock(far))?;
    let at = |d: Duration| {
        let secs = i64::try_from(d.as_secs()).map_err(|_| clock(far))?;
        let at = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| clock(far))?;
        // X.509 times have four-digit years.
        if at.year() > 9999 {
            return Err(clock(far));
        }
        Ok(at)
    };
    Ok((at(from)?, at(to)?))
}

/// A serial number unique to what is certified and when: the SHA-256 of both, cut to the 20
/// bytes RFC 5280 allows, positive.
fn serial(parts: &[&[u8]], now: SystemTime) -> SerialNumber {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    ctx.update(&nanos.to_be_bytes());
    let mut bytes = ctx.finish().as_ref()[..20].to_vec();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from(bytes)
}

/// PEM text of a DER object, 64 columns, as rcgen and openssl write it.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let base64 = data_encoding::BASE64.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fn internal<E: fmt::Display>(what: &'static str) -> impl Fn(E) -> TrustError {
    move |e| TrustError::Internal {
        what,
        cause: e.to_string(),
    }
}
