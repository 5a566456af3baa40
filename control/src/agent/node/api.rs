//! The agent's local API: HTTP on a unix socket (0600, root only), for other orchestrators
//! and the CLI on the node. `POST /v1/attachments` attaches a namespace to an attachable
//! network, `DELETE /v1/attachments/{container}[?network=NAME]` detaches, `GET
//! /v1/attachments` lists, `GET /v1/status` is `shoal agent status`, `GET /metrics` is
//! Prometheus text. Errors are `{"error": "..."}` with a status, as the manager's API.
//! [`LocalClient`] is the blocking client of `shoal attach` and `shoal-cni`.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Agent;
use super::attach::{AttachFailure, AttachSpec, Attached};
use crate::manager::api::ApiError;

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/shoal/agent.sock";

/// What the API's callers send to attach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The runtime's id of the container.
    pub container: String,
    /// Its name on the network; default: the container id.
    #[serde(default)]
    pub name: Option<String>,
    pub network: String,
    pub netns: PathBuf,
    /// Default `eth0`.
    #[serde(default)]
    pub ifname: Option<String>,
}

/// One attachment, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container: String,
    pub name: String,
    pub network: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `10.0.3.5/24`.
    pub address: String,
    pub mac: String,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub mtu: u32,
}

impl From<Attached> for Attachment {
    fn from(a: Attached) -> Attachment {
        let m = a.mac;
        Attachment {
            address: format!("{}/{}", a.ip, a.prefix_len),
            mac: format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            container: a.container,
            name: a.name,
            network: a.network,
            netns: a.netns,
            ifname: a.ifname,
            gateway: a.gateway,
            dns: Ipv4Addr::new(127, 0, 0, 11),
            mtu: a.mtu,
        }
    }
}

#[derive(Deserialize)]
struct DetachQuery {
    network: Option<String>,
}

type Shared = Arc<Agent>;

fn refusal(status: u16, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ApiError { error: message })).into_response()
}

fn failed(e: AttachFailure) -> Response {
    refusal(e.status, e.message)
}

/// Runs blocking agent work off the server's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| refusal(500, format!("the agent's worker failed: {e}")))
}

async fn attach(Extract(agent): Extract<Shared>, body: axum::body::Bytes) -> Response {
    // Parsed here, not by an extractor, so that a bad body gets a message in our shape.
    let request: AttachRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refusal(400, format!("the attach request is not valid JSON: {e}")),
    };
    if request.container.is_empty() || request.network.is_empty() {
        return refusal(
            400,
            "an attach request needs a container id and a network".into(),
        );
    }
    let spec = AttachSpec {
        name: request
            .name
            .clone()
            .unwrap_or_else(|| request.container.clone()),
        container: request.container,
        network: request.network,
        netns: request.netns,
        ifname: request.ifname.unwrap_or_else(|| "eth0".into()),
    };
    match blocking(move || agent.attach(&spec)).await {
        Ok(Ok(a)) => (StatusCode::CREATED, Json(Attachment::from(a))).into_response(),
        Ok(Err(e)) => failed(e),
        Err(r) => r,
    }
}

async fn detach(
    Extract(agent): Extract<Shared>,
    UrlPath(container): UrlPath<String>,
    Query(query): Query<DetachQuery>,
) -> Response {
    let detached = blocking(move || agent.detach(&container, query.network.as_deref())).await;
    match detached {
        Ok(Ok(gone)) => {
            Json(gone.into_iter().map(Attachment::from).collect::<Vec<_>>()).into_response()
        }
        Ok(Err(e)) => failed(e),
        Err(r) => r,
    }
}

async fn list(Extract(agent): Extract<Shared>) -> Response {
    match blocking(move || agent.attachments()).await {
        Ok(all) => Json(all.into_iter().map(Attachment::from).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

async fn status(Extract(agent): Extract<Shared>) -> Response {
    match blocking(move || agent.status()).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

async fn metrics(Extract(agent): Extract<Shared>) -> Response {
    match blocking(move || super::report::metrics(&agent.status())).await {
        Ok(text) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(r) => r,
    }
}

/// Binds the socket (its folder made 0700, a stale socket nobody answers on replaced, the
/// socket 0600) and serves the API on a thread of its own until the process ends.
pub fn serve(path: &Path, agent: Arc<Agent>) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("local API socket {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "local API socket {}: another agent answers on it (one agent per node, or give --socket)",
                path.display()
            ));
        }
        std::fs::remove_file(path).map_err(fail)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let app = Router::new()
        .route("/v1/attachments", get(list).post(attach))
        .route("/v1/attachments/{container}", delete(detach))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .with_state(agent);
    spawn_server("agent-api", app, move || {
        tokio::net::UnixListener::from_std(listener)
    })
    .map_err(fail)?;
    Ok(())
}

/// Serves `GET /metrics` alone on a TCP address (Docker's `--metrics-addr`), for
/// Prometheus to scrape; on a thread of its own until the process ends.
pub fn serve_metrics(addr: std::net::SocketAddr, agent: Arc<Agent>) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("metrics address {addr}: {e}");
    let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(agent);
    spawn_server("agent-metrics", app, move || {
        tokio::net::TcpListener::from_std(listener)
    })
    .map_err(fail)?;
    Ok(())
}

/// Serves `app` on a thread of its own with its own runtime, on the listener `listen`
/// makes there (tokio's listeners must be made inside a runtime), until the process ends.
fn spawn_server<L>(
    name: &str,
    app: Router,
    listen: impl FnOnce() -> std::io::Result<L> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let label = name.to_owned();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("{label}: {e}"),
            };
            runtime.block_on(async move {
                match listen() {
                    Ok(listener) => {
                        if let Err(e) = axum::serve(listener, app).await {
                            tracing::error!("{label}: {e}");
                        }
                    }
                    Err(e) => tracing::error!("{label}: {e}"),
                }
            });
        })?;
    Ok(())
}

/// A blocking client of the local API.
#[derive(Clone, Debug)]
pub struct LocalClient {
    pub socket: PathBuf,
}

/// A refusal (status and message) or the agent unreachable.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error(
        "cannot reach the agent at {socket}: {source} (is `shoal agent` running on this node? --socket or SHOAL_AGENT_SOCKET name another)"
    )]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent at {socket} answered something unexpected: {why}")]
    Garbled { socket: PathBuf, why: String },
}

impl LocalClient {
    pub fn new(socket: impl Into<PathBuf>) -> LocalClient {
        LocalClient {
            socket: socket.into(),
        }
    }

    pub fn attach(&self, request: &AttachRequest) -> Result<Attachment, LocalError> {
        self.call("POST", "/v1/attachments", request)
    }

    pub fn detach(
        &self,
        container: &str,
        network: Option<&str>,
    ) -> Result<Vec<Attachment>, LocalError> {
        let query = network.map(|n| format!("?network={n}")).unwrap_or_default();
        self.call(
            "DELETE",
            &format!("/v1/attachments/{container}{query}"),
            &(),
        )
    }

    pub fn attachments(&self) -> Result<Vec<Attachment>, LocalError> {
        self.call("GET", "/v1/attachments", &())
    }

    pub fn status(&self) -> Result<super::report::Status, LocalError> {
        self.call("GET", "/v1/status", &())
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, LocalError> {
        let unreachable = |source| LocalError::Unreachable {
            socket: self.socket.clone(),
            source,
        };
        let garbled = |why: String| LocalError::Garbled {
            socket: self.socket.clone(),
            why,
        };
        let body = if method == "POST" {
            serde_json::to_vec(body).map_err(|e| garbled(e.to_string()))?
        } else {
            Vec::new()
        };
        let stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        // Attaching waits for the manager and the view: bounded, generously.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(unreachable)?;
        let (status_line, response) = crate::manager::api::exchange(
            Box::new(stream),
            "agent",
            method,
            path,
            "application/json",
            &body,
        )
        .map_err(unreachable)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| garbled(format!("status line {status_line:?}")))?;
        if status >= 400 {
            let message = serde_json::from_slice::<ApiError>(&response)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&response).into_owned());
            return Err(LocalError::Refused { status, message });
        }
        serde_json::from_slice(&response).map_err(|e| garbled(e.to_string()))
    }
}
