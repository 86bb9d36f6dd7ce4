//! `/api/admin/*`: what an operator does to other people's sessions, and the audit
//! trail that remembers who did it.

use super::openapi::responses::{AdminErrors, BodyErrors};
use super::{ApiJson, ApiPath, ApiQuery};
use crate::app::AppState;
use crate::auth::{AdminSession, AuthSession};
use crate::error::{ApiError, ApiResult};
use crate::revocation::{MAX_REASON_CHARS, RevokeKind, RevokeOrder, revoke};
use crate::store::{self, AuditRecord, BanRecord, RevokeScope, UserRecord};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
#[allow(unused_imports)]
use tether_shared::api::ErrorBody;
use tether_shared::api::{
    AdminSessionView, AdminSessionsResponse, AuditEntry, AuditResponse, BanRequest, BanUntil, RevokeRequest,
    RevokeResponse,
};
use tether_shared::{SessionId, UserId};
use time::OffsetDateTime;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/sessions", get(list_sessions))
        .route("/api/admin/sessions/{sid}/revoke", post(revoke_session))
        .route("/api/admin/users/{uid}/kick", post(kick_user))
        .route("/api/admin/users/{uid}/ban", post(ban_user).delete(unban_user))
        .route("/api/admin/revoke-all", post(revoke_all))
        .route("/api/admin/audit", get(audit_trail))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SessionsQuery {
    /// A user's id; empty means no filter, so that `?user_id=&online=true` works as written.
    #[serde(default)]
    user_id: Option<String>,
    /// Only sessions with an open socket.
    #[serde(default)]
    online: bool,
}

#[utoipa::path(
    get,
    path = "/api/admin/sessions",
    tag = "admin",
    params(SessionsQuery),
    security(("bearer" = [])),
    responses(
        AdminErrors,
        (status = 200, description = "live sessions", body = AdminSessionsResponse),
        (status = 400, description = "bad query", body = ErrorBody),
    )
)]
async fn list_sessions(
    State(state): State<AppState>,
    _admin: AdminSession,
    ApiQuery(query): ApiQuery<SessionsQuery>,
) -> ApiResult<Json<AdminSessionsResponse>> {
    let user_id = match query.user_id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => Some(
            id.parse::<UserId>()
                .map_err(|_| ApiError::invalid_request(StatusCode::BAD_REQUEST, "user_id: not a UUID"))?,
        ),
        None => None,
    };
    let records = state.store.live_sessions_with_users(user_id.map(|id| id.0), store::now()).await?;
    let mut elsewhere: std::collections::HashMap<uuid::Uuid, (u32, Vec<String>)> = Default::default();
    for (session, node, sockets) in crate::cluster::sockets_elsewhere(&state).await? {
        let counted = elsewhere.entry(session).or_default();
        counted.0 += sockets.max(0) as u32;
        counted.1.push(node);
    }
    let sessions = records
        .into_iter()
        .filter_map(|record| {
            let live = state.sessions.get(SessionId(record.id));
            let here = live.as_ref().map_or(0, |entry| entry.open_sockets() as u32);
            let mut nodes = if here > 0 { vec![state.node_id.to_string()] } else { Vec::new() };
            let (there, other_nodes) = elsewhere.remove(&record.id).unwrap_or_default();
            nodes.extend(other_nodes);
            nodes.sort();
            let sockets = here + there;
            if query.online && sockets == 0 {
                return None;
            }
            Some(AdminSessionView {
                id: SessionId(record.id),
                user_id: UserId(record.user_id),
                username: record.username,
                created_at: record.created_at,
                last_seen_at: live
                    .as_ref()
                    .map_or(record.last_seen_at, |entry| entry.last_seen_at().max(record.last_seen_at)),
                sockets,
                nodes,
            })
        })
        .collect();
    Ok(Json(AdminSessionsResponse { sessions }))
}

#[utoipa::path(
    post,
    path = "/api/admin/sessions/{sid}/revoke",
    tag = "admin",
    params(("sid" = Uuid, Path)), request_body = RevokeRequest,
    security(("bearer" = [])),
    responses(
        AdminErrors,
        BodyErrors,
        (status = 200, description = "revoked (zero counts if it already was)", body = RevokeResponse),
        (status = 404, description = "no such session", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(target = %sid))]
async fn revoke_session(
    State(state): State<AppState>,
    AdminSession(admin): AdminSession,
    ApiPath(sid): ApiPath<SessionId>,
    ApiJson(request): ApiJson<RevokeRequest>,
) -> ApiResult<Json<RevokeResponse>> {
    let reason = admin_reason(request.reason.as_deref())?;
    if state.store.find_session(sid.0).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let audit = AuditEvent::new("revoke_session", "session", Some(sid.to_string()), reason);
    let order = admin_order(RevokeScope::Session(sid.0), RevokeKind::AdminRevoke, &admin, audit);
    Ok(Json(revoke(&state, order).await?))
}

#[utoipa::path(
    post,
    path = "/api/admin/users/{uid}/kick",
    tag = "admin",
    params(("uid" = Uuid, Path)), request_body = RevokeRequest,
    security(("bearer" = [])),
    responses(
        AdminErrors,
        BodyErrors,
        (status = 200, description = "every session of the user revoked (close 4004)", body = RevokeResponse),
        (status = 404, description = "no such user", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(target = %uid))]
async fn kick_user(
    State(state): State<AppState>,
    AdminSession(admin): AdminSession,
    ApiPath(uid): ApiPath<UserId>,
    ApiJson(request): ApiJson<RevokeRequest>,
) -> ApiResult<Json<RevokeResponse>> {
    let reason = admin_reason(request.reason.as_deref())?;
    let user = existing_user(&state, uid).await?;
    let audit = AuditEvent::new("kick", "user", Some(uid.to_string()), reason);
    Ok(Json(revoke(&state, admin_order(RevokeScope::User(user.id), RevokeKind::Kick, &admin, audit)).await?))
}

#[utoipa::path(
    post,
    path = "/api/admin/users/{uid}/ban",
    tag = "admin",
    params(("uid" = Uuid, Path)), request_body = BanRequest,
    security(("bearer" = [])),
    responses(
        AdminErrors,
        BodyErrors,
        (status = 200, description = "banned; every session revoked (close 4003)", body = RevokeResponse),
        (status = 404, description = "no such user", body = ErrorBody),
    )
)]
/// An admin cannot ban themselves. That also means the last admin can never be
/// banned (whoever bans is an admin who stays), so the server always keeps someone
/// who can lift a ban.
#[tracing::instrument(skip_all, fields(target = %uid))]
async fn ban_user(
    State(state): State<AppState>,
    AdminSession(admin): AdminSession,
    ApiPath(uid): ApiPath<UserId>,
    ApiJson(request): ApiJson<BanRequest>,
) -> ApiResult<Json<RevokeResponse>> {
    let reason = admin_reason(request.reason.as_deref())?;
    let user = existing_user(&state, uid).await?;
    if uid == admin.claims.sub {
        return Err(ApiError::Refused("an admin cannot ban themselves"));
    }
    let now = store::now();
    // Judged and answered in UTC whatever offset it was sent with.
    let until = request.until.map(store::truncate_to_seconds);
    if until.is_some_and(|until| until <= now) {
        return Err(ApiError::unprocessable("until: must be in the future (or absent for a permanent ban)"));
    }
    let ban = BanRecord {
        user_id: user.id,
        reason: reason.map(str::to_owned),
        until,
        created_at: now,
        actor_id: admin.claims.sub.0,
    };
    let mut audit = AuditEvent::new("ban", "user", Some(uid.to_string()), reason);
    audit.ban_until = Some(until);
    let mut order = admin_order(RevokeScope::User(user.id), RevokeKind::Ban, &admin, audit);
    order.ban = Some(ban);
    Ok(Json(revoke(&state, order).await?))
}

#[utoipa::path(
    delete,
    path = "/api/admin/users/{uid}/ban",
    tag = "admin",
    params(("uid" = Uuid, Path)),
    security(("bearer" = [])),
    responses(
        AdminErrors,
        (status = 204, description = "not banned (any more)"),
        (status = 404, description = "no such user", body = ErrorBody),
    )
)]
async fn unban_user(
    State(state): State<AppState>,
    AdminSession(admin): AdminSession,
    ApiPath(uid): ApiPath<UserId>,
) -> ApiResult<StatusCode> {
    existing_user(&state, uid).await?;
    let audit = audit_entry(&admin, AuditEvent::new("unban", "user", Some(uid.to_string()), None));
    if let Some(seq) = state.store.unban(uid.0, audit.at, &state.node_id, &audit).await? {
        state.bans.unban(uid.0);
        crate::revocation::announce(&state, seq).await;
        tracing::info!(actor = %admin.claims.sub, target = %uid, "admin action: unban");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/admin/revoke-all",
    tag = "admin",
    request_body = RevokeRequest,
    security(("bearer" = [])),
    responses(
        AdminErrors,
        BodyErrors,
        (status = 200, description = "every session but the caller's revoked", body = RevokeResponse),
    )
)]
/// Every session but the caller's own, so the operator keeps the console.
async fn revoke_all(
    State(state): State<AppState>,
    AdminSession(admin): AdminSession,
    ApiJson(request): ApiJson<RevokeRequest>,
) -> ApiResult<Json<RevokeResponse>> {
    let reason = admin_reason(request.reason.as_deref())?;
    let audit = AuditEvent::new("revoke_all", "all", None, reason);
    let order = admin_order(RevokeScope::AllExcept(admin.claims.sid.0), RevokeKind::RevokeAll, &admin, audit);
    Ok(Json(revoke(&state, order).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// How many entries, newest first: 1 to 1000, default 100.
    #[serde(default)]
    limit: Option<i64>,
}

const AUDIT_DEFAULT_LIMIT: i64 = 100;
const AUDIT_MAX_LIMIT: i64 = 1000;

#[utoipa::path(
    get,
    path = "/api/admin/audit",
    tag = "admin",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        AdminErrors,
        (status = 200, description = "newest first", body = AuditResponse),
        (status = 400, description = "bad query", body = ErrorBody),
    )
)]
async fn audit_trail(
    State(state): State<AppState>,
    _admin: AdminSession,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditResponse>> {
    let limit = query.limit.unwrap_or(AUDIT_DEFAULT_LIMIT).clamp(1, AUDIT_MAX_LIMIT);
    let entries = state
        .store
        .audit_entries(limit)
        .await?
        .into_iter()
        .map(|record| AuditEntry {
            ban: (record.action == "ban").then_some(BanUntil { until: record.until }),
            id: record.id,
            at: record.at,
            actor_id: UserId(record.actor_id),
            actor_name: record.actor_name,
            action: record.action,
            target_type: record.target_type,
            target_id: record.target_id,
            reason: record.reason,
            sessions_revoked: record.sessions_revoked.max(0) as u64,
            sockets_closed: record.sockets_closed.max(0) as u64,
        })
        .collect();
    Ok(Json(AuditResponse { entries }))
}

/// One admin action for the audit trail.
struct AuditEvent<'a> {
    action: &'static str,
    target_type: &'static str,
    target_id: Option<String>,
    reason: Option<&'a str>,
    /// Set on a ban: its end, None for a permanent one.
    ban_until: Option<Option<OffsetDateTime>>,
}

impl<'a> AuditEvent<'a> {
    fn new(
        action: &'static str,
        target_type: &'static str,
        target_id: Option<String>,
        reason: Option<&'a str>,
    ) -> AuditEvent<'a> {
        AuditEvent { action, target_type, target_id, reason, ban_until: None }
    }
}

/// The audit entry of an action; its counts are filled in as the revocation runs.
fn audit_entry(admin: &AuthSession, event: AuditEvent<'_>) -> AuditRecord {
    AuditRecord {
        id: uuid::Uuid::new_v4(),
        at: store::now(),
        actor_id: admin.claims.sub.0,
        actor_name: admin.claims.name.clone(),
        action: event.action.to_owned(),
        target_type: event.target_type.to_owned(),
        target_id: event.target_id,
        reason: event.reason.map(str::to_owned),
        sessions_revoked: 0,
        sockets_closed: 0,
        until: event.ban_until.flatten(),
    }
}

/// An admin's revocation, with its audit entry written in the same transaction.
fn admin_order(
    scope: RevokeScope,
    kind: RevokeKind,
    admin: &AuthSession,
    event: AuditEvent<'_>,
) -> RevokeOrder {
    tracing::info!(actor = %admin.claims.sub, action = event.action, target = event.target_id.as_deref().unwrap_or("all"), "admin action");
    let reason = event.reason.map(str::to_owned);
    RevokeOrder { scope, kind, reason, ban: None, audit: Some(audit_entry(admin, event)) }
}

async fn existing_user(state: &AppState, id: UserId) -> ApiResult<UserRecord> {
    state.store.find_user(id.0).await?.ok_or(ApiError::NotFound)
}

fn admin_reason(reason: Option<&str>) -> ApiResult<Option<&str>> {
    let reason = reason.map(str::trim).filter(|reason| !reason.is_empty());
    if reason.is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::unprocessable(format!("reason: at most {MAX_REASON_CHARS} characters")));
    }
    Ok(reason)
}
