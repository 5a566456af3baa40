#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::manager::model::Role;
use crate::manager::tokens::{JoinTokens, TokenError};

/// 2026-11-20T00:00:00Z: the module has no clock, so these tests pick their own time.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_132_800)
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn a_ca_issues_node_certificates_that_say_the_node_id_and_role() {
    let ca = ClusterCa::generate(now()).unwrap();
    for (id, role, ou) in [
        ("w0rker-1", Role::Worker, OU_WORKER),
        ("mgr1", Role::Manager, OU_MANAGER),
    ] {
        let key = NodeKey::generate(id).unwrap();
        let cert = ca.issue(&key.csr_pem, id, role, now()).unwrap();
        let expected = NodeIdentity {
            node_id: id.to_owned(),
            role,
        };
        assert_eq!(cert.identity, expected);
        assert_eq!(NodeIdentity::from_pem(&cert.cert_pem).unwrap(), expected);
        assert_eq!(
            NodeIdentity::from_der(&der_of(&cert.cert_pem)).unwrap(),
            expected
        );

        let der = der_of(&cert.cert_pem);
        let (_, x509) = X509Certificate::from_der(&der).unwrap();
        assert!(!x509.is_ca());
        assert_eq!(x509.issuer().to_string(), "O=shoal, CN=shoal cluster CA");
        assert_eq!(
            x509.subject().to_string(),
            format!("O=shoal, OU={ou}, CN={id}")
        );
        let san = x509.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(names, vec![format!("DNSName({id}.node.shoal)")]);
        let validity = x509.validity();
        let start = now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert_eq!(
            validity.not_before.timestamp(),
            start - 3_600,
            "backdated an hour"
        );
        assert_eq!(
            validity.not_after.timestamp(),
            start + 90 * 86_400,
            "90 days"
        );
        assert_eq!(cert.not_after, now() + NODE_VALIDITY);
        // The key is the node's: the certificate certifies the CSR's key.
        let node_key = KeyPair::from_pem(&key.key_pem).unwrap();
        assert_eq!(
            x509.tbs_certificate.subject_pki.raw,
            node_key.subject_public_key_info().as_slice()
        );
    }
}

#[test]
fn the_manager_certificate_names_manager_shoal_and_its_addresses() {
    let ca = ClusterCa::generate(now()).unwrap();
    let key = NodeKey::generate("m1").unwrap();
    let addrs = ["127.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap()];
    let cert = ca.issue_manager(&key.csr_pem, "m1", &addrs, now()).unwrap();
    assert_eq!(cert.identity.role, Role::Manager);
    let der = der_of(&cert.cert_pem);
    let (_, x509) = X509Certificate::from_der(&der).unwrap();
    let san = x509.subject_alternative_name().unwrap().unwrap().value;
    let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        [
            "DNSName(m1.node.shoal)",
            "DNSName(manager.shoal)",
            "IPAddress(7f:00:00:01)",
            "IPAddress(c0:00:02:07)"
        ]
    );
}

#[test]
fn what_a_csr_asks_for_besides_its_key_is_ignored() {
    // A worker asks to be a manager, a CA, and manager.shoal: it gets its id and role only.
    let ca = ClusterCa::generate(now()).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["manager.shoal".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "mgr1");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, OU_MANAGER);
    params
        .subject_alt_names
        .push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.issue(&csr, "w1", Role::Worker, now()).unwrap();
    let der = der_of(&cert.cert_pem);
    let (_, x509) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        x509.subject().to_string(),
        "O=shoal, OU=swarm-worker, CN=w1"
    );
    assert!(!x509.is_ca());
    let san = x509.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names.len(), 1, "{:?}", san.general_names);
}

#[test]
fn the_digest_is_stable_and_is_what_join_tokens_carry() {
    let ca = ClusterCa::generate(now()).unwrap();
    let digest = ca.digest().to_owned();
    assert_eq!(digest.len(), 64);
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(digest, super::digest(ca.cert_der()));
    assert_eq!(digest, super::digest(&der_of(ca.cert_pem())));

    // Stored and loaded: the same CA, the same digest, and it still issues.
    let loaded = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.digest(), digest);
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    let key = NodeKey::generate("n1").unwrap();
    let cert = loaded
        .issue(&key.csr_pem, "n1", Role::Worker, now())
        .unwrap();
    assert_eq!(cert.identity.node_id, "n1");

    // The token round trip: made from the digest, printed, parsed, checked, pinned.
    let mut tokens = JoinTokens::new(&digest, "workersecret0123456789", "managersecret012345678");
    let printed = tokens.worker.to_string();
    assert!(printed.starts_with(&format!("SHTKN-1-{digest}-")));
    assert_eq!(tokens.check(&printed), Ok(Role::Worker));
    let parsed: crate::manager::tokens::Token = printed.parse().unwrap();
    assert_eq!(pin_check(ca.cert_pem(), &parsed.ca_digest), Ok(()));
    tokens.rotate(Role::Worker, "rotatedworkersecret999");
    assert_eq!(tokens.check(&printed), Err(TokenError::Invalid));

    // Another CA is another cluster, for the token and for the pin.
    let other = ClusterCa::generate(now()).unwrap();
    assert_ne!(other.digest(), digest);
    let other_token = JoinTokens::new(
        other.digest(),
        "workersecret0123456789",
        "m0123456789abcdefg",
    );
    assert_eq!(
        tokens.check(&other_token.worker.to_string()),
        Err(TokenError::OtherCluster)
    );
}

#[test]
fn pin_check_refuses_another_clusters_ca_naming_both_digests() {
    let ca = ClusterCa::generate(now()).unwrap();
    let other = ClusterCa::generate(now()).unwrap();
    assert_eq!(pin_check(ca.cert_pem(), ca.digest()), Ok(()));
    let err = pin_check(other.cert_pem(), ca.digest()).unwrap_err();
    assert_eq!(
        err,
        TrustError::OtherCluster {
            expected: ca.digest().to_owned(),
            actual: other.digest().to_owned()
        }
    );
    let text = err.to_string();
    assert!(
        text.contains(ca.digest()) && text.contains(other.digest()),
        "{text}"
    );
    assert!(
        text.contains("another cluster") && text.contains("shoal join-token"),
        "{text}"
    );

    assert!(matches!(
        pin_check(ca.cert_pem(), "ABC"),
        Err(TrustError::BadDigest { .. })
    ));
    assert!(matches!(
        pin_check("not pem", ca.digest()),
        Err(TrustError::BadCert { .. })
    ));
}

#[test]
fn a_stored_ca_whose_parts_do_not_match_is_refused() {
    let ca = ClusterCa::generate(now()).unwrap();
    let other = ClusterCa::generate(now()).unwrap();
    let err = ClusterCa::from_pem(ca.cert_pem(), &other.key_pem()).unwrap_err();
    assert_eq!(err, TrustError::CaKeyMismatch);
    assert!(err.to_string().contains("backup"));
    // A node certificate is no CA, even with its own key.
    let key = NodeKey::generate("n1").unwrap();
    let cert = ca.issue(&key.csr_pem, "n1", Role::Worker, now()).unwrap();
    let err = ClusterCa::from_pem(&cert.cert_pem, &key.key_pem).unwrap_err();
    assert!(
        matches!(&err, TrustError::BadCa { cause, .. } if cause.contains("not a CA")),
        "{err}"
    );
    assert!(matches!(
        ClusterCa::from_pem("", &ca.key_pem()),
        Err(TrustError::BadCa {
            what: "cluster CA certificate",
            ..
        })
    ));
    assert!(matches!(
        ClusterCa::from_pem(
            ca.cert_pem(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        ),
        Err(TrustError::BadCa {
            what: "cluster CA key",
            ..
        })
    ));
}

#[test]
fn bad_node_ids_csrs_keys_and_clocks_are_refused_with_the_fix() {
    let ca = ClusterCa::generate(now()).unwrap();
    let key = NodeKey::generate("n1").unwrap();
    for bad in ["", "-a", "a-", "Upper", "a.b", "a b", &"x".repeat(64)] {
        let err = ca
            .issue(&key.csr_pem, bad, Role::Worker, now())
            .unwrap_err();
        assert_eq!(err, TrustError::NodeId { id: bad.to_owned() });
        assert!(err.to_string().contains("lower-case"));
    }
    assert!(
        ca.issue(&key.csr_pem, &"x".repeat(63), Role::Worker, now())
            .is_ok()
    );

    // A CSR whose signature does not hold: the signer does not hold the key.
    let mut tampered = der_of_csr(&key.csr_pem);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let tampered = crate::manager::trust::ca::pem_encode("CERTIFICATE REQUEST", &tampered);
    let err = ca.issue(&tampered, "n1", Role::Worker, now()).unwrap_err();
    assert!(matches!(err, TrustError::BadCsr { .. }), "{err}");
    assert!(err.to_string().contains("NodeKey::generate"));
    let err = ca.issue("garbage", "n1", Role::Worker, now()).unwrap_err();
    assert!(matches!(err, TrustError::BadCsr { .. }), "{err}");

    let err = ClusterCa::generate(UNIX_EPOCH - Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, TrustError::Clock { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the time -1 s after 1970-01-01 cannot be put on a certificate (it is before 1970): check the system clock of this host"
    );
    let far = UNIX_EPOCH + Duration::from_secs(253_402_214_400); // 9999-12-31
    assert!(matches!(
        ClusterCa::generate(far),
        Err(TrustError::Clock { .. })
    ));
    assert!(matches!(
        ca.issue(&key.csr_pem, "n1", Role::Worker, far),
        Err(TrustError::Clock { .. })
    ));
}

#[test]
fn node_identity_refuses_certificates_that_are_not_a_nodes() {
    let ca = ClusterCa::generate(now()).unwrap();
    let err = NodeIdentity::from_der(ca.cert_der()).unwrap_err();
    assert!(matches!(err, TrustError::NotANode { .. }), "{err}");
    assert!(matches!(
        NodeIdentity::from_der(b"\x30\x03\x02\x01\x00"),
        Err(TrustError::BadCert { .. })
    ));
    assert!(matches!(
        NodeIdentity::from_pem(""),
        Err(TrustError::BadCert { .. })
    ));
}

#[test]
fn secrets_stay_out_of_debug() {
    let ca = ClusterCa::generate(now()).unwrap();
    let debug = format!("{ca:?}");
    assert_eq!(debug, format!("ClusterCa({})", ca.digest()));
    let key = NodeKey::generate("n1").unwrap();
    assert!(!format!("{key:?}").contains("PRIVATE KEY"));
    assert!(format!("{key:?}").contains("CERTIFICATE REQUEST"));
}

fn der_of_csr(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateSigningRequestDer;
    use rustls::pki_types::pem::PemObject;
    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}
