#![allow(clippy::unwrap_used)]
//! Fuzzing the trust module's parsing entry points (proptest on stable): arbitrary text and
//! bytes, and valid certificates, keys and CSRs with bytes flipped, cut or inserted (wrapped
//! in PEM again), go into every function that reads PEM or DER, which must refuse with a
//! `TrustError`, never panic, and never take a mangled CSR for a good one.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use control::manager::model::Role;
use control::manager::trust::{
    ClusterCa, NodeIdentity, NodeKey, TrustError, client_config, pin_check, pinned_client_config,
    server_config,
};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_132_800)
}

struct Fixture {
    ca: ClusterCa,
    key: NodeKey,
    cert_pem: String,
    cert_der: Vec<u8>,
    csr_der: Vec<u8>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let ca = ClusterCa::generate(now()).unwrap();
    let key = NodeKey::generate("n1").unwrap();
    let cert = ca.issue(&key.csr_pem, "n1", Role::Worker, now()).unwrap();
    let cert_der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    let csr_der = CertificateSigningRequestDer::from_pem_slice(key.csr_pem.as_bytes())
        .unwrap()
        .to_vec();
    Fixture {
        ca,
        key,
        cert_pem: cert.cert_pem,
        cert_der,
        csr_der,
    }
});

fn pem(label: &str, der: &[u8]) -> String {
    let body = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A valid DER object with one edit: a byte flipped, the tail cut, or a byte inserted.
fn mangled(der: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (0..der.len(), any::<u8>(), 0..3u8).prop_map(move |(at, byte, how)| {
        let mut out = der.to_vec();
        match how {
            0 => out[at] ^= byte | 1,
            1 => out.truncate(at),
            _ => out.insert(at, byte),
        }
        out
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..600).prop_map(|b| pem("CERTIFICATE", &b)),
        prop::collection::vec(any::<u8>(), 0..600).prop_map(|b| pem("PRIVATE KEY", &b)),
        prop::collection::vec(any::<u8>(), 0..600).prop_map(|b| pem("CERTIFICATE REQUEST", &b)),
        "-----BEGIN [A-Z ]{0,20}-----\n[A-Za-z0-9+/=\n]{0,200}(-----END [A-Z ]{0,20}-----)?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics_anything_that_reads_pem(a in text(), b in text()) {
        let f = &*FIXTURE;
        let _ = ClusterCa::from_pem(&a, &b);
        let _ = ClusterCa::from_pem(f.ca.cert_pem(), &a);
        let _ = ClusterCa::from_pem(&a, &f.ca.key_pem());
        prop_assert!(f.ca.issue(&a, "n1", Role::Worker, now()).is_err());
        prop_assert!(f.ca.issue_manager(&a, "n1", &[], now()).is_err());
        let _ = NodeIdentity::from_pem(&a);
        let _ = pin_check(&a, f.ca.digest());
        let _ = pin_check(f.ca.cert_pem(), &a);
        let _ = pinned_client_config(&a);
        let _ = server_config(&a, &b, &f.key.key_pem);
        let _ = server_config(f.ca.cert_pem(), &f.cert_pem, &a);
        let _ = client_config(&a, Some((&b, &f.key.key_pem)));
        let _ = client_config(f.ca.cert_pem(), Some((&f.cert_pem, &a)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_certificate_reader(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(NodeIdentity::from_der(&bytes).is_err());
    }

    #[test]
    fn a_mangled_csr_is_refused(der in mangled(&FIXTURE.csr_der)) {
        let f = &*FIXTURE;
        prop_assume!(der != f.csr_der);
        match f.ca.issue(&pem("CERTIFICATE REQUEST", &der), "n1", Role::Worker, now()) {
            Err(TrustError::BadCsr { .. } | TrustError::KeyAlgorithm { .. }) => {}
            // An edit the parser does not see (a byte it skips over) leaves the request as
            // signed: it is then the same request, and the manager still decides the name.
            Ok(cert) => prop_assert_eq!(cert.identity.node_id, "n1"),
            Err(other) => prop_assert!(false, "unexpected refusal: {other}"),
        }
    }

    #[test]
    fn a_mangled_certificate_never_panics_the_readers(der in mangled(&FIXTURE.cert_der)) {
        let f = &*FIXTURE;
        let _ = NodeIdentity::from_der(&der);
        let text = pem("CERTIFICATE", &der);
        let _ = NodeIdentity::from_pem(&text);
        let _ = ClusterCa::from_pem(&text, &f.key.key_pem);
        let _ = pin_check(&text, f.ca.digest());
        let _ = server_config(f.ca.cert_pem(), &text, &f.key.key_pem);
        let _ = client_config(&text, None);
    }

    #[test]
    fn a_mangled_ca_never_panics_loading_it(der in mangled(FIXTURE.ca.cert_der())) {
        let f = &*FIXTURE;
        let text = pem("CERTIFICATE", &der);
        if let Ok(ca) = ClusterCa::from_pem(&text, &f.ca.key_pem()) {
            // What loads still issues, or refuses cleanly.
            let _ = ca.issue(&f.key.csr_pem, "n1", Role::Worker, now());
        }
    }
}

/// Every single-byte edit of the stored CA certificate, with a few masks (0xe3 turns the
/// 0x55 that starts the names' OIDs, 2.5.4.x, into one that is no valid OID): loading refuses
/// it, or what loads still issues. Before the self-signature check, an edited name loaded
/// and issuing panicked inside rcgen's DER writer.
#[test]
fn every_single_byte_edit_of_the_stored_ca_is_refused_or_harmless() {
    let f = &*FIXTURE;
    let original = f.ca.cert_der();
    let key_pem = f.ca.key_pem();
    let mut loaded = 0;
    for at in 0..original.len() {
        for mask in [0x01u8, 0x10, 0x80, 0xe3, 0xff] {
            let mut der = original.to_vec();
            der[at] ^= mask;
            if let Ok(ca) = ClusterCa::from_pem(&pem("CERTIFICATE", &der), &key_pem) {
                loaded += 1;
                ca.issue(&f.key.csr_pem, "n1", Role::Worker, now()).unwrap();
            }
        }
    }
    assert!(loaded < 20, "{loaded} edited CAs loaded");
}

/// The same for a node's CSR (the manager issues for it or refuses it, and what it issues
/// names the node the manager chose) and a node certificate (read or refused).
#[test]
fn every_single_byte_edit_of_a_csr_or_node_certificate_is_refused_or_harmless() {
    let f = &*FIXTURE;
    for at in 0..f.csr_der.len() {
        for mask in [0x01u8, 0x10, 0x80, 0xe3, 0xff] {
            let mut der = f.csr_der.clone();
            der[at] ^= mask;
            let csr = pem("CERTIFICATE REQUEST", &der);
            if let Ok(cert) = f.ca.issue(&csr, "n1", Role::Worker, now()) {
                assert_eq!(cert.identity.node_id, "n1");
            }
        }
    }
    for at in 0..f.cert_der.len() {
        for mask in [0x01u8, 0x10, 0x80, 0xe3, 0xff] {
            let mut der = f.cert_der.clone();
            der[at] ^= mask;
            let _ = NodeIdentity::from_der(&der);
            let _ = server_config(f.ca.cert_pem(), &pem("CERTIFICATE", &der), &f.key.key_pem);
        }
    }
}
