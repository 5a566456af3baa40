//! Node ids, and who a certificate says its holder is: the node id in the CN, the role in the
//! OU. Read from a certificate that rustls has already verified against the cluster CA; the
//! parsing itself refuses anything else without panicking.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{OU_MANAGER, OU_WORKER, TrustError};
use crate::manager::model::Role;

/// Who a node certificate was issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: String,
    pub role: Role,
}

impl NodeIdentity {
    /// Reads the identity from a certificate's DER.
    pub fn from_der(der: &[u8]) -> Result<NodeIdentity, TrustError> {
        let not_a_node = |cause: &str| TrustError::NotANode {
            cause: cause.to_owned(),
        };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| TrustError::BadCert {
            what: "node certificate",
            cause: e.to_string(),
        })?;
        if !rest.is_empty() {
            return Err(TrustError::BadCert {
                what: "node certificate",
                cause: "trailing bytes after it".to_owned(),
            });
        }
        let subject = cert.subject();
        let one = |mut values: Vec<Option<&str>>, what: &str| match (values.pop(), values.pop()) {
            (Some(Some(value)), None) => Ok(value.to_owned()),
            (None, _) => Err(not_a_node(&format!("it has no {what}"))),
            (Some(None), None) => Err(not_a_node(&format!("its {what} is not a string"))),
            (Some(_), Some(_)) => Err(not_a_node(&format!("it has more than one {what}"))),
        };
        let cn = one(
            subject
                .iter_common_name()
                .map(|a| a.as_str().ok())
                .collect(),
            "common name",
        )?;
        let ou = one(
            subject
                .iter_organizational_unit()
                .map(|a| a.as_str().ok())
                .collect(),
            "organisational unit",
        )?;
        let role = match ou.as_str() {
            OU_MANAGER => Role::Manager,
            OU_WORKER => Role::Worker,
            _ => return Err(not_a_node(&format!("its OU {ou:?} is no role"))),
        };
        check_node_id(&cn).map_err(|_| not_a_node(&format!("its CN {cn:?} is no node id")))?;
        Ok(NodeIdentity { node_id: cn, role })
    }

    /// Reads the identity from a certificate's PEM (the first certificate in it).
    pub fn from_pem(pem: &str) -> Result<NodeIdentity, TrustError> {
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| TrustError::BadCert {
                what: "node certificate",
                cause: e.to_string(),
            })?;
        NodeIdentity::from_der(&der)
    }
}

/// A node id is a DNS label, so that `<id>.node.shoal` is a name: 1 to 63 of `[a-z0-9-]`, not
/// starting or ending with `-` (Docker's ids, 25 lower-case base-36 characters, are such).
pub fn check_node_id(id: &str) -> Result<(), TrustError> {
    let ok = (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(TrustError::NodeId { id: id.to_owned() })
    }
}
