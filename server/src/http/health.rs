//! Liveness and readiness for load balancers and orchestrators.

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use std::time::Duration;
#[allow(unused_imports)]
use tether_shared::api::ErrorBody;

/// A store that takes longer than this to answer counts as unreachable.
const READY_PROBE_BOUND: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// `{"status": ...}` of the probes.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Status {
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "the process serves", body = Status),
    )
)]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "storage reachable", body = Status),
        (status = 503, description = "storage unreachable", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Status>> {
    match tokio::time::timeout(READY_PROBE_BOUND, state.store.ping()).await {
        Ok(Ok(())) if state.log.ready() => Ok(Json(Status { status: "ready" })),
        Ok(Ok(())) => Err(ApiError::NotReady),
        Ok(Err(error)) => {
            tracing::warn!(error = format!("{error:#}"), "storage unreachable");
            Err(ApiError::NotReady)
        }
        Err(_) => Err(ApiError::NotReady),
    }
}
