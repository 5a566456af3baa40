//! The API server: axum routes over the [`Manager`], one lock around it (commands are applied
//! one at a time, as a single writer must), and a watch channel that wakes the views' long
//! polls when the revision moves.

use std::io;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::LONG_POLL;
use crate::manager::compose;
use crate::manager::{ApplyError, Command, Manager, ManagerError};

/// A refusal as the API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

struct Shared {
    manager: Mutex<Manager>,
    revision: watch::Sender<u64>,
}

type AppState = Arc<Shared>;

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, manager: Manager) -> io::Result<()> {
    let (revision, _) = watch::channel(manager.state().revision);
    let shared = Arc::new(Shared {
        manager: Mutex::new(manager),
        revision,
    });
    let app = Router::new()
        .route("/v1/commands", post(command))
        .route("/v1/stacks/{name}", post(stack))
        .route("/v1/state", get(state))
        .route("/v1/nodes/{node}/view", get(view))
        .with_state(shared);
    axum::serve(listener, app).await
}

fn refusal(status: StatusCode, message: String) -> Response {
    (status, Json(ApiError { error: message })).into_response()
}

fn status_of(error: &ApplyError) -> StatusCode {
    match error {
        ApplyError::Refused(ManagerError::NotFound { .. }) => StatusCode::NOT_FOUND,
        ApplyError::Refused(
            ManagerError::Exists { .. }
            | ManagerError::NetworkInUse { .. }
            | ManagerError::PortInUse { .. },
        ) => StatusCode::CONFLICT,
        ApplyError::Refused(_) => StatusCode::BAD_REQUEST,
        ApplyError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Manager> {
        self.manager.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, command: Command) -> Result<crate::manager::Applied, ApplyError> {
        let mut manager = self.lock();
        let applied = manager.apply(command)?;
        self.revision.send_replace(applied.revision);
        Ok(applied)
    }
}

async fn command(Extract(shared): Extract<AppState>, Json(command): Json<Command>) -> Response {
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
    Path(node): Path<String>,
    Query(after): Query<After>,
) -> Response {
    let mut revisions = shared.revision.subscribe();
    // Wait (bounded) until the state has moved past what the agent already has.
    let _ = tokio::time::timeout(LONG_POLL, revisions.wait_for(|r| *r > after.after)).await;
    let manager = shared.lock();
    let state = manager.state();
    match state.node(&node) {
        Ok(n) => Json(state.node_view(&n.id)).into_response(),
        Err(e) => refusal(StatusCode::NOT_FOUND, e.to_string()),
    }
}
