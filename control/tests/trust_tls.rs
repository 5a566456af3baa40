#![allow(clippy::unwrap_used)]
//! Real mTLS handshakes over loopback (tokio-rustls) with the trust module's configurations:
//! a member's certificate is seen by the manager, a client without one gets through the
//! handshake with no identity (only join may be asked then), certificates of another CA are
//! refused both ways, and a joining agent's pin on the CA digest holds. Every socket is on
//! 127.0.0.1, port 0, and every exchange has a timeout.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use control::manager::model::Role;
use control::manager::tokens::{JoinTokens, Token};
use control::manager::trust::{
    ClusterCa, MANAGER_SERVER_NAME, NodeCert, NodeIdentity, NodeKey, TrustError, client_config,
    peer_identity, pinned_client_config, refusal, server_config,
};

const LIMIT: Duration = Duration::from_secs(10);

fn now() -> SystemTime {
    #[allow(clippy::disallowed_methods)] // tests read the clock: rustls checks validity against it
    SystemTime::now()
}

struct Cluster {
    ca: ClusterCa,
    manager_key: NodeKey,
    manager_cert: NodeCert,
}

impl Cluster {
    fn new() -> Cluster {
        let ca = ClusterCa::generate(now()).unwrap();
        let manager_key = NodeKey::generate("mgr1").unwrap();
        let addrs: [IpAddr; 1] = ["127.0.0.1".parse().unwrap()];
        let manager_cert = ca
            .issue_manager(&manager_key.csr_pem, "mgr1", &addrs, now())
            .unwrap();
        Cluster {
            ca,
            manager_key,
            manager_cert,
        }
    }

    fn server(&self) -> ServerConfig {
        server_config(
            self.ca.cert_pem(),
            &self.manager_cert.cert_pem,
            &self.manager_key.key_pem,
        )
        .unwrap()
    }

    /// A node's key and certificate, as the agent keeps them.
    fn node(&self, id: &str, role: Role) -> (String, String) {
        let key = NodeKey::generate(id).unwrap();
        let cert = self.ca.issue(&key.csr_pem, id, role, now()).unwrap();
        (cert.cert_pem, key.key_pem)
    }

    fn member(&self, id: &str, role: Role) -> ClientConfig {
        let (cert, key) = self.node(id, role);
        client_config(self.ca.cert_pem(), Some((&cert, &key))).unwrap()
    }
}

/// What each side saw of one connection: the server, the peer's identity once the handshake
/// is done; the client, what the server wrote after it.
#[derive(Debug)]
struct Seen {
    server: Result<Option<NodeIdentity>, String>,
    client: Result<String, std::io::Error>,
}

async fn connect(server: ServerConfig, client: ClientConfig, name: &str) -> Seen {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let who = peer_identity(tls.get_ref().1);
        let greeting = match &who {
            Some(id) => format!("hello {}", id.node_id),
            None => "hello stranger".to_owned(),
        };
        tls.write_all(greeting.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok(who)
    });
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let connector = TlsConnector::from(Arc::new(client));
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connector.connect(name, tcp).await?;
        let mut text = String::new();
        tls.read_to_string(&mut text).await?;
        Ok(text)
    };
    let client = timeout(LIMIT, client)
        .await
        .expect("the client finishes in time");
    let server = timeout(LIMIT, serve)
        .await
        .expect("the server finishes in time")
        .unwrap();
    Seen { server, client }
}

#[tokio::test]
async fn a_member_with_a_node_certificate_is_seen_by_its_identity() {
    let cluster = Cluster::new();
    for (id, role) in [("w1", Role::Worker), ("m2", Role::Manager)] {
        let seen = connect(
            cluster.server(),
            cluster.member(id, role),
            MANAGER_SERVER_NAME,
        )
        .await;
        let expected = NodeIdentity {
            node_id: id.to_owned(),
            role,
        };
        assert_eq!(seen.server, Ok(Some(expected)), "{seen:?}");
        assert_eq!(seen.client.unwrap(), format!("hello {id}"));
    }
    // The manager is reached by its IP address too: it is on its certificate.
    let seen = connect(
        cluster.server(),
        cluster.member("w1", Role::Worker),
        "127.0.0.1",
    )
    .await;
    assert!(matches!(seen.server, Ok(Some(_))), "{seen:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_gets_through_with_no_identity() {
    let cluster = Cluster::new();
    let anonymous = client_config(cluster.ca.cert_pem(), None).unwrap();
    let seen = connect(cluster.server(), anonymous, MANAGER_SERVER_NAME).await;
    assert_eq!(
        seen.server,
        Ok(None),
        "the API refuses all but join: {seen:?}"
    );
    assert_eq!(seen.client.unwrap(), "hello stranger");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_by_the_manager() {
    let cluster = Cluster::new();
    let other = Cluster::new();
    // Trusts our CA, but carries a certificate of another cluster's CA.
    let (cert, key) = other.node("w1", Role::Worker);
    let intruder = client_config(cluster.ca.cert_pem(), Some((&cert, &key))).unwrap();
    let seen = connect(cluster.server(), intruder, MANAGER_SERVER_NAME).await;
    let err = seen.server.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(
        seen.client.as_ref().is_ok_and(String::is_empty) || seen.client.is_err(),
        "the client gets nothing: {:?}",
        seen.client
    );
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_does_not_accept_the_manager() {
    let cluster = Cluster::new();
    let other = Cluster::new();
    let misled = other.member("w1", Role::Worker);
    let seen = connect(cluster.server(), misled, MANAGER_SERVER_NAME).await;
    let err = seen.client.unwrap_err().to_string();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(seen.server.is_err(), "{:?}", seen.server);
}

#[tokio::test]
async fn a_node_certificate_does_not_pass_for_a_managers() {
    // A worker's certificate is signed by the right CA, but does not name manager.shoal.
    let cluster = Cluster::new();
    let (cert, key) = cluster.node("w9", Role::Worker);
    let impostor = server_config(cluster.ca.cert_pem(), &cert, &key).unwrap();
    let seen = connect(
        impostor,
        cluster.member("w1", Role::Worker),
        MANAGER_SERVER_NAME,
    )
    .await;
    let err = seen.client.unwrap_err().to_string();
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn a_joining_agent_trusts_only_the_manager_of_its_tokens_cluster() {
    let cluster = Cluster::new();
    let tokens = JoinTokens::new(
        cluster.ca.digest(),
        "workersecret0123456789",
        "mgrsecret0123456789",
    );
    let token: Token = tokens.worker.to_string().parse().unwrap();

    // The right cluster: the handshake holds, anonymously, so the token and CSR can be sent.
    let join = pinned_client_config(&token.ca_digest).unwrap();
    let seen = connect(cluster.server(), join, MANAGER_SERVER_NAME).await;
    assert_eq!(seen.server, Ok(None), "{seen:?}");
    assert_eq!(seen.client.unwrap(), "hello stranger");

    // Another cluster's manager: refused before the token leaves, naming both digests.
    let other = Cluster::new();
    let join = pinned_client_config(&token.ca_digest).unwrap();
    let seen = connect(other.server(), join, MANAGER_SERVER_NAME).await;
    let err = seen.client.unwrap_err();
    let refused = refusal(&err).expect("the handshake failed on the pin");
    assert_eq!(
        refused,
        &TrustError::OtherCluster {
            expected: cluster.ca.digest().to_owned(),
            actual: other.ca.digest().to_owned(),
        }
    );
    let text = refused.to_string();
    assert!(
        text.contains(cluster.ca.digest()) && text.contains(other.ca.digest()),
        "{text}"
    );
    assert!(text.contains("another cluster"), "{text}");
    assert!(
        err.to_string().contains(other.ca.digest()),
        "rustls' own text has it: {err}"
    );

    // The pin holds the name too: a worker's certificate under the right CA is no manager.
    let (cert, key) = cluster.node("w9", Role::Worker);
    let impostor = server_config(cluster.ca.cert_pem(), &cert, &key).unwrap();
    let join = pinned_client_config(&token.ca_digest).unwrap();
    let seen = connect(impostor, join, MANAGER_SERVER_NAME).await;
    let err = seen.client.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert_eq!(refusal(&err), None, "not a pin refusal");

    assert!(matches!(
        pinned_client_config("nothex"),
        Err(TrustError::BadDigest { .. })
    ));
}

#[test]
fn configurations_refuse_unusable_pem_with_the_object_named() {
    let cluster = Cluster::new();
    let err = server_config(
        "",
        &cluster.manager_cert.cert_pem,
        &cluster.manager_key.key_pem,
    )
    .unwrap_err();
    assert!(err.to_string().contains("cluster CA certificate"), "{err}");
    let err = server_config(
        cluster.ca.cert_pem(),
        &cluster.manager_cert.cert_pem,
        "nope",
    )
    .unwrap_err();
    assert!(err.to_string().contains("manager key"), "{err}");
    // A key that is not the certificate's.
    let stranger = NodeKey::generate("x").unwrap();
    let err = server_config(
        cluster.ca.cert_pem(),
        &cluster.manager_cert.cert_pem,
        &stranger.key_pem,
    )
    .unwrap_err();
    assert!(matches!(err, TrustError::Tls { .. }), "{err}");
    let err = client_config(cluster.ca.cert_pem(), Some(("", ""))).unwrap_err();
    assert!(err.to_string().contains("node certificate"), "{err}");
}
