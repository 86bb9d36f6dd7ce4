//! The caller's own account: who am I, my sessions, revoke one of them.

use super::ApiPath;
use super::openapi::responses::BearerErrors;
use crate::app::AppState;
use crate::auth::{AuthSession, BearerToRevoke};
use crate::error::{ApiError, ApiResult};
use crate::revocation::{RevokeKind, RevokeOrder, revoke};
use crate::store::{self, RevokeScope};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use tether_shared::SessionId;
#[allow(unused_imports)]
use tether_shared::api::ErrorBody;
use tether_shared::api::{MeResponse, OwnSessionView, OwnSessionsResponse, SessionSummary, UserView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/me", get(me))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{sid}", delete(delete_session))
}

#[utoipa::path(
    get,
    path = "/api/me",
    tag = "account",
    security(("bearer" = [])),
    responses(
        BearerErrors,
        (status = 200, description = "who the token belongs to", body = MeResponse),
    )
)]
/// Answered from the token and the registry alone.
async fn me(auth: AuthSession) -> Json<MeResponse> {
    Json(MeResponse {
        user: UserView { id: auth.claims.sub, username: auth.claims.name, role: auth.claims.role },
        session: SessionSummary {
            id: auth.session.id,
            created_at: auth.session.created_at,
            expires_at: auth.session.expires_at,
        },
    })
}

#[utoipa::path(
    get,
    path = "/api/sessions",
    tag = "account",
    security(("bearer" = [])),
    responses(
        BearerErrors,
        (status = 200, description = "the caller's live sessions", body = OwnSessionsResponse),
    )
)]
async fn list_sessions(
    State(state): State<AppState>,
    auth: AuthSession,
) -> ApiResult<Json<OwnSessionsResponse>> {
    let records = state.store.live_sessions_of_user(auth.claims.sub.0, store::now()).await?;
    let sessions = records
        .into_iter()
        .map(|record| {
            let id = SessionId(record.id);
            let live = state.sessions.get(id);
            OwnSessionView {
                id,
                created_at: record.created_at,
                // Memory is ahead of the store between flushes.
                last_seen_at: live
                    .as_ref()
                    .map_or(record.last_seen_at, |entry| entry.last_seen_at().max(record.last_seen_at)),
                user_agent: record.user_agent,
                ip: record.ip,
                sockets: live.as_ref().map_or(0, |entry| entry.open_sockets() as u32),
                current: id == auth.claims.sid,
            }
        })
        .collect();
    Ok(Json(OwnSessionsResponse { sessions }))
}

#[utoipa::path(
    delete,
    path = "/api/sessions/{sid}",
    tag = "account",
    params(("sid" = Uuid, Path, description = "a session of the caller")),
    security(("bearer" = [])),
    responses(
        BearerErrors,
        (status = 204, description = "revoked"),
        (status = 404, description = "not one of the caller's sessions", body = ErrorBody),
    )
)]
async fn delete_session(
    State(state): State<AppState>,
    auth: AuthSession<BearerToRevoke>,
    ApiPath(sid): ApiPath<SessionId>,
) -> ApiResult<StatusCode> {
    let owned =
        state.store.find_session(sid.0).await?.is_some_and(|session| session.user_id == auth.claims.sub.0);
    if !owned {
        return Err(ApiError::NotFound);
    }
    revoke(&state, RevokeOrder::new(RevokeScope::Session(sid.0), RevokeKind::SessionDelete)).await?;
    Ok(StatusCode::NO_CONTENT)
}
