//! `shoal init` (the cluster's CA, the manager's certificate, the tokens, the CLI's
//! credentials) and the agent's side of joining.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use crate::manager::Manager;
use crate::manager::api::ApiClient;
use crate::manager::api::join::{JoinRequest, JoinResponse, secret};
use crate::manager::ipam::PoolConfig;
use crate::manager::model::Role;
use crate::manager::store::TrustRecord;
use crate::manager::tokens::{JoinTokens, Token};
use crate::manager::trust::{ClusterCa, NodeKey, client_config, pinned_client_config};

#[allow(clippy::disallowed_methods)] // shell: certificates start now
pub fn init(
    state: &Path,
    advertise: Ipv4Addr,
    certs_out: &Path,
    pool: PoolConfig,
) -> Result<(), String> {
    let now = std::time::SystemTime::now();
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut manager = Manager::open(state, pool).map_err(|e| e.to_string())?;
    if manager.trust().is_some() {
        return Err(format!(
            "{} already holds a cluster: `shoal join-token worker` prints its token",
            state.display()
        ));
    }
    let ca = ClusterCa::generate(now).map_err(|e| e.to_string())?;
    let manager_key = NodeKey::generate("manager").map_err(|e| e.to_string())?;
    let addresses = [IpAddr::V4(advertise), IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let manager_cert = ca
        .issue_manager(&manager_key.csr_pem, "manager", &addresses, now)
        .map_err(|e| e.to_string())?;
    // The CLI's own credentials: a manager-role certificate that is not a node.
    let cli_key = NodeKey::generate("cli").map_err(|e| e.to_string())?;
    let cli_cert = ca
        .issue(&cli_key.csr_pem, "cli", Role::Manager, now)
        .map_err(|e| e.to_string())?;
    let tokens = JoinTokens::new(ca.digest(), &secret()?, &secret()?);
    let record = TrustRecord {
        ca_cert_pem: ca.cert_pem().to_owned(),
        ca_key_pem: ca.key_pem(),
        manager_cert_pem: manager_cert.cert_pem,
        manager_key_pem: manager_key.key_pem.clone(),
        tokens: tokens.clone(),
    };
    manager.set_trust(record).map_err(|e| e.to_string())?;
    // The gossip keyring's first key, drawn here as every key is.
    let key = crate::manager::api::fresh_gossip_key().map_err(|e| e.to_string())?;
    manager
        .apply(crate::manager::Command::RotateGossipKey { key })
        .map_err(|e| e.to_string())?;
    write_credentials(
        certs_out,
        ca.cert_pem(),
        &cli_cert.cert_pem,
        &cli_key.key_pem,
    )?;
    println!(
        "Cluster initialised: state in {}, CLI credentials in {}",
        state.display(),
        certs_out.display()
    );
    println!(
        "To add a worker, run on it:\n\n    shoal agent --join {advertise}:2377 --token {} --hostname HOST --addr ADDR\n",
        tokens.worker
    );
    println!("To add a manager: `shoal join-token manager`.");
    Ok(())
}

fn write_credentials(dir: &Path, ca: &str, cert: &str, key: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    std::fs::write(dir.join("ca.pem"), ca).map_err(|e| fail(&dir.join("ca.pem"), e))?;
    std::fs::write(dir.join("cli.pem"), cert).map_err(|e| fail(&dir.join("cli.pem"), e))?;
    // The key is readable by its owner only (root): whoever holds it manages the cluster.
    let key_path = dir.join("cli.key");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| fail(&key_path, e))?;
    std::io::Write::write_all(&mut file, key.as_bytes()).map_err(|e| fail(&key_path, e))
}

/// A node that joined: its client (with its certificate) and what it must keep to come back
/// as the same node.
pub struct Joined {
    pub api: ApiClient,
    pub node_id: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Joins with `token`: a key and CSR made here, the manager trusted only if its CA has the
/// token's digest; returns a client with the node's certificate and the node id it was given.
pub fn join(
    manager: SocketAddr,
    token: &str,
    hostname: &str,
    addr: Ipv4Addr,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<Joined, String> {
    let parsed: Token = token
        .parse()
        .map_err(|e: crate::manager::tokens::TokenError| e.to_string())?;
    let key = NodeKey::generate(hostname).map_err(|e| e.to_string())?;
    let pinned = pinned_client_config(&parsed.ca_digest).map_err(|e| e.to_string())?;
    let request = JoinRequest {
        token: token.to_owned(),
        csr_pem: key.csr_pem.clone(),
        hostname: hostname.to_owned(),
        addr,
        labels,
    };
    let joined: JoinResponse = ApiClient::with_tls(manager, pinned)
        .post("/v1/join", &request)
        .map_err(|e| e.to_string())?;
    let config = client_config(&joined.ca_cert_pem, Some((&joined.cert_pem, &key.key_pem)))
        .map_err(|e| e.to_string())?;
    Ok(Joined {
        api: ApiClient::with_tls(manager, config),
        node_id: joined.node_id,
        ca_pem: joined.ca_cert_pem,
        cert_pem: joined.cert_pem,
        key_pem: key.key_pem,
    })
}
