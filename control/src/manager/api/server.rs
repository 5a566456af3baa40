//! The API server: axum routes over the [`Manager`], one lock around it (commands are applied
//! one at a time, as a single writer must), and a watch channel that wakes the views' long
//! polls when the revision moves.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::LONG_POLL;
use super::listener::{Caller, Peer};
use crate::manager::compose;
use crate::manager::keys::KeyBytes;
use crate::manager::model::{NodeStatus, Role};
use crate::manager::{ApplyError, Command, Manager, ManagerError};

/// A refusal as the API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

pub(super) struct Shared {
    manager: Mutex<Manager>,
    revision: watch::Sender<u64>,
    /// When each node's agent last asked for its view: its heartbeat.
    seen: Mutex<BTreeMap<String, Instant>>,
    options: ServeOptions,
}

/// How the server judges nodes.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A node whose agent has not asked for its view this long is down: its tasks are
    /// rescheduled. It is ready again as soon as it asks.
    pub node_down_after: Duration,
    /// How often every encrypted network gets a new key (Docker: 12 h).
    pub key_rotation: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        // Long polls come back at least every LONG_POLL; a little more than two missed ones.
        Self {
            node_down_after: LONG_POLL * 2 + Duration::from_secs(5),
            key_rotation: Duration::from_secs(12 * 3600),
        }
    }
}

pub(super) type AppState = Arc<Shared>;

/// Serves the API on `listener` (TLS, or plain with `--insecure`) until the task is dropped.
pub async fn serve<L>(listener: L, manager: Manager, options: ServeOptions) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = Peer>,
    Peer: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let (revision, _) = watch::channel(manager.state().revision);
    let shared = Arc::new(Shared {
        manager: Mutex::new(manager),
        revision,
        seen: Mutex::new(BTreeMap::new()),
        options,
    });
    tokio::spawn(watch_nodes(shared.clone()));
    tokio::spawn(rotate_on_schedule(shared.clone()));
    let app = Router::new()
        .route("/v1/commands", post(command))
        .route("/v1/stacks/{name}", post(stack))
        .route("/v1/state", get(state))
        .route("/v1/nodes/{node}/view", get(view))
        .route("/v1/join-tokens", get(join_tokens))
        .route("/v1/networks/{name}/rotate-key", post(rotate_key))
        .route("/v1/join-tokens/{role}/rotate", post(rotate_token))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authorize,
        ))
        .route("/v1/join", post(super::join::join))
        .with_state(shared);
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await
}

pub(super) fn refusal(status: StatusCode, message: String) -> Response {
    (status, Json(ApiError { error: message })).into_response()
}

pub(super) fn status_of(error: &ApplyError) -> StatusCode {
    match error {
        ApplyError::Refused(ManagerError::NotFound { .. }) => StatusCode::NOT_FOUND,
        ApplyError::Refused(
            ManagerError::Exists { .. }
            | ManagerError::NetworkInUse { .. }
            | ManagerError::PortInUse { .. },
        ) => StatusCode::CONFLICT,
        ApplyError::Refused(_) => StatusCode::BAD_REQUEST,
        ApplyError::Store(_) | ApplyError::Entropy => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Shared {
    #[allow(clippy::disallowed_methods)] // shell: a heartbeat is a reading of the clock
    fn heard_from(&self, node: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_owned(), Instant::now());
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Manager> {
        self.manager.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a command; a new encrypted network gets its first key at once (drawn here:
    /// the core draws nothing).
    pub(super) fn apply(&self, command: Command) -> Result<crate::manager::Applied, ApplyError> {
        let encrypted = matches!(&command, Command::CreateNetwork(spec) if spec.encrypted);
        let mut manager = self.lock();
        let mut applied = manager.apply(command)?;
        if encrypted && let Some(id) = applied.id.clone() {
            let rotated = manager.apply(Command::RotateKey {
                network: id,
                key: fresh_key()?,
            })?;
            applied.revision = rotated.revision;
        }
        self.revision.send_replace(applied.revision);
        Ok(applied)
    }

    /// A new key for every encrypted network (the schedule), or for one (on demand).
    fn rotate_keys(&self, only: Option<&str>) -> Result<u64, ApplyError> {
        let networks: Vec<String> = {
            let manager = self.lock();
            let state = manager.state();
            match only {
                Some(name) => vec![state.network(name)?.id.clone()],
                None => state
                    .networks
                    .values()
                    .filter(|n| n.spec.encrypted)
                    .map(|n| n.id.clone())
                    .collect(),
            }
        };
        let mut revision = self.lock().state().revision;
        if only.is_none() {
            revision = self
                .apply(Command::RotateGossipKey { key: fresh_key()? })?
                .revision;
        }
        for network in networks {
            revision = self
                .apply(Command::RotateKey {
                    network,
                    key: fresh_key()?,
                })?
                .revision;
        }
        Ok(revision)
    }
}

async fn command(
    Extract(shared): Extract<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(command): Json<Command>,
) -> Response {
    // A worker's agent reports on its own tasks and keys, and attaches and detaches the
    // standalone containers of its own node; everything else is a manager's.
    if let Caller::Member(who) = &peer.caller
        && who.role == Role::Worker
        && !match &command {
            Command::TaskStatus { .. } | Command::KeyAck { .. } | Command::GossipKeyAck { .. } => {
                true
            }
            Command::AttachContainer { node, .. } => *node == who.node_id,
            Command::DetachContainer { container } => shared
                .lock()
                .state()
                .containers
                .get(container)
                .is_some_and(|c| c.node == who.node_id),
            _ => false,
        }
    {
        return refusal(
            StatusCode::FORBIDDEN,
            format!(
                "node {} is a worker: only managers change the cluster",
                who.node_id
            ),
        );
    }
    match shared.apply(command) {
        Ok(applied) => Json(applied).into_response(),
        Err(e) => refusal(status_of(&e), e.to_string()),
    }
}

/// Deploys a compose file: its networks (those that exist already are kept), then its
/// services (created, or updated when they exist).
async fn stack(
    Extract(shared): Extract<AppState>,
    Path(name): Path<String>,
    body: String,
) -> Response {
    let parsed = match compose::parse(&format!("{name}.yml"), &name, &body) {
        Ok(stack) => stack,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut results = Vec::new();
    for network in parsed.networks {
        let exists = shared.lock().state().network(&network.name).is_ok();
        if !exists {
            match shared.apply(Command::CreateNetwork(network)) {
                Ok(applied) => results.push(applied),
                Err(e) => return refusal(status_of(&e), e.to_string()),
            }
        }
    }
    for service in parsed.services {
        let exists = shared.lock().state().service(&service.name).is_ok();
        let command = if exists {
            Command::UpdateService {
                service: service.name.clone(),
                spec: service,
            }
        } else {
            Command::CreateService(service)
        };
        match shared.apply(command) {
            Ok(applied) => results.push(applied),
            Err(e) => return refusal(status_of(&e), e.to_string()),
        }
    }
    Json(results).into_response()
}

async fn state(Extract(shared): Extract<AppState>) -> Response {
    let state = shared.lock().state().clone();
    Json(state).into_response()
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

async fn view(
    Extract(shared): Extract<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(node): Path<String>,
    Query(after): Query<After>,
) -> Response {
    if let Caller::Member(who) = &peer.caller
        && who.role == Role::Worker
        && who.node_id != node
    {
        return refusal(
            StatusCode::FORBIDDEN,
            format!("node {} may follow its own view only", who.node_id),
        );
    }
    let mut revisions = shared.revision.subscribe();
    shared.heard_from(&node);
    // Wait (bounded) until the state has moved past what the agent already has. A node is
    // heard from when it asks and when it is answered, so the wait must stay well within
    // the time after which a silent node is down (a short --node-down-after would otherwise
    // mark every idle node down).
    let wait = LONG_POLL.min(shared.options.node_down_after / 3);
    let _ = tokio::time::timeout(wait, revisions.wait_for(|r| *r > after.after)).await;
    shared.heard_from(&node);
    let manager = shared.lock();
    let state = manager.state();
    match state.node(&node) {
        Ok(n) => Json(state.node_view(&n.id)).into_response(),
        Err(e) => refusal(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// Marks nodes down when their agents fell silent, and ready when they speak again.
#[allow(clippy::disallowed_methods)] // shell: reads the clock
async fn watch_nodes(shared: AppState) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let changes: Vec<(String, NodeStatus)> = {
            let manager = shared.lock();
            let seen = shared.seen.lock().unwrap_or_else(|p| p.into_inner());
            manager
                .state()
                .nodes
                .values()
                .filter_map(|n| {
                    // A node never heard from since the manager started counts from the start.
                    let last = seen.get(&n.id).copied().unwrap_or(started);
                    let silent = last.elapsed() > shared.options.node_down_after;
                    match (n.status, silent) {
                        (NodeStatus::Ready, true) => Some((n.id.clone(), NodeStatus::Down)),
                        (NodeStatus::Down, false) if seen.contains_key(&n.id) => {
                            Some((n.id.clone(), NodeStatus::Ready))
                        }
                        _ => None,
                    }
                })
                .collect()
        };
        for (node, status) in changes {
            if let Err(e) = shared.apply(Command::NodeStatus {
                node: node.clone(),
                status,
            }) {
                tracing::warn!("manager: cannot mark node {node} {status:?}: {e}");
            }
        }
    }
}

/// Every route but join needs a caller the cluster knows: a member certificate of a node that
/// is still in the cluster (or plain HTTP, when the manager runs `--insecure`).
async fn authorize(
    Extract(shared): Extract<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &peer.caller {
        Caller::Insecure => next.run(request).await,
        Caller::Anonymous => refusal(
            StatusCode::UNAUTHORIZED,
            "the manager's API needs a client certificate of this cluster: join with `shoal agent --join MANAGER --token TOKEN`, or give the CLI the certificates `shoal init` wrote (--certs DIR)".into(),
        ),
        Caller::Member(who) => {
            let known = who.role == Role::Manager || shared.lock().state().nodes.contains_key(&who.node_id);
            if known {
                next.run(request).await
            } else {
                refusal(StatusCode::FORBIDDEN, format!("node {} is no longer in the cluster: join again with a token", who.node_id))
            }
        }
    }
}

/// The current join tokens (managers only).
async fn join_tokens(
    Extract(shared): Extract<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Response {
    if let Some(denied) = managers_only(&peer) {
        return denied;
    }
    match shared.lock().trust() {
        Some(trust) => Json(super::join::Tokens {
            worker: trust.tokens.worker.to_string(),
            manager: trust.tokens.manager.to_string(),
        })
        .into_response(),
        None => refusal(
            StatusCode::BAD_REQUEST,
            "this manager runs without `shoal init` (--insecure): it has no join tokens".into(),
        ),
    }
}

/// A new secret for a role's token: the old token is refused from now on.
async fn rotate_token(
    Extract(shared): Extract<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(role): Path<String>,
) -> Response {
    if let Some(denied) = managers_only(&peer) {
        return denied;
    }
    let role = match role.as_str() {
        "worker" => Role::Worker,
        "manager" => Role::Manager,
        other => {
            return refusal(
                StatusCode::NOT_FOUND,
                format!("role {other:?}: worker or manager"),
            );
        }
    };
    let mut manager = shared.lock();
    let Some(mut trust) = manager.trust().cloned() else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "this manager runs without `shoal init` (--insecure): it has no join tokens".into(),
        );
    };
    let secret = match super::join::secret() {
        Ok(secret) => secret,
        Err(e) => return refusal(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    trust.tokens.rotate(role, &secret);
    let tokens = super::join::Tokens {
        worker: trust.tokens.worker.to_string(),
        manager: trust.tokens.manager.to_string(),
    };
    match manager.set_trust(trust) {
        Ok(()) => Json(tokens).into_response(),
        Err(e) => refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn managers_only(peer: &Peer) -> Option<Response> {
    match &peer.caller {
        Caller::Member(who) if who.role == Role::Worker => Some(refusal(
            StatusCode::FORBIDDEN,
            format!(
                "node {} is a worker: join tokens are for managers",
                who.node_id
            ),
        )),
        _ => None,
    }
}

/// 32 key bytes from the OS.
pub(crate) fn fresh_key() -> Result<KeyBytes, ApplyError> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| ApplyError::Entropy)?;
    Ok(KeyBytes(key))
}

/// On demand: `shoal network rotate-key NAME` (managers).
async fn rotate_key(
    Extract(shared): Extract<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> Response {
    if let Some(denied) = managers_only(&peer) {
        return denied;
    }
    if let Ok(net) = shared.lock().state().network(&name)
        && !net.spec.encrypted
    {
        return refusal(
            StatusCode::BAD_REQUEST,
            ManagerError::NotEncrypted { network: name }.to_string(),
        );
    }
    match shared.rotate_keys(Some(&name)) {
        Ok(revision) => Json(crate::manager::Applied {
            revision,
            ..Default::default()
        })
        .into_response(),
        Err(e) => refusal(status_of(&e), e.to_string()),
    }
}

/// Every `key_rotation`, a new key for every encrypted network.
async fn rotate_on_schedule(shared: AppState) {
    let mut tick = tokio::time::interval(shared.options.key_rotation);
    tick.tick().await; // the first tick is immediate: networks got their first key at creation
    loop {
        tick.tick().await;
        if let Err(e) = shared.rotate_keys(None) {
            tracing::warn!("manager: scheduled key rotation failed: {e}");
        }
    }
}
