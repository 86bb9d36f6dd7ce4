//! Liveness and readiness for load balancers and orchestrators.

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::time::Duration;

/// A store that takes longer than this to answer counts as unreachable.
const READY_PROBE_BOUND: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    match tokio::time::timeout(READY_PROBE_BOUND, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(error)) => {
            tracing::warn!(error = format!("{error:#}"), "storage unreachable");
            Err(ApiError::NotReady)
        }
        Err(_) => Err(ApiError::NotReady),
    }
}
