//! `/api/admin/*`: what an operator does to other people's sessions.

use super::{ApiJson, ApiPath};
use crate::app::AppState;
use crate::auth::AdminSession;
use crate::error::{ApiError, ApiResult};
use crate::revocation::{MAX_REASON_CHARS, revoke};
use crate::sessions::RevokeKind;
use crate::store::RevokeScope;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tether_shared::SessionId;
use tether_shared::api::{RevokeRequest, RevokeResponse};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/sessions/{sid}/revoke", post(revoke_session))
}

#[tracing::instrument(skip_all, fields(target = %sid))]
async fn revoke_session(
    State(state): State<AppState>,
    AdminSession(admin): AdminSession,
    ApiPath(sid): ApiPath<SessionId>,
    ApiJson(request): ApiJson<RevokeRequest>,
) -> ApiResult<Json<RevokeResponse>> {
    let reason = admin_reason(&request)?;
    if state.store.find_session(sid.0).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let outcome = revoke(&state, RevokeScope::Session(sid.0), RevokeKind::AdminRevoke, reason).await?;
    tracing::info!(actor = %admin.claims.sub, revoked = outcome.sessions_revoked, "admin revoked a session");
    Ok(Json(outcome))
}

fn admin_reason(request: &RevokeRequest) -> ApiResult<Option<&str>> {
    let reason = request.reason.as_deref().map(str::trim).filter(|reason| !reason.is_empty());
    if reason.is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::unprocessable(format!("reason: at most {MAX_REASON_CHARS} characters")));
    }
    Ok(reason)
}
