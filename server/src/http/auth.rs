//! `/api/auth/*`: register, log in, refresh with rotation, log out.

use super::openapi::responses::{BearerErrors, BodyErrors};
use super::{ApiJson, no_content_with};
use crate::app::AppState;
use crate::auth::refresh::{self, COOKIE_NAME, COOKIE_PATH};
use crate::auth::{AuthSession, BearerToRevoke};
use crate::client_ip::Client;
use crate::error::{ApiError, ApiResult};
use crate::revocation::{RevokeKind, RevokeOrder, revoke};
use crate::sessions::SessionProblem;
use crate::store::{self, CreateUser, NewUser, RefreshOutcome, RevokeScope, SessionRecord, UserRecord};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cookie::{Cookie, SameSite};
#[allow(unused_imports)]
use tether_shared::api::ErrorBody;
use tether_shared::api::{
    CredentialsRequest, RefreshRequest, RegisterResponse, Role, TokenPairResponse, UserView,
};
use tether_shared::{SessionId, UserId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/logout-all", post(logout_all))
}

/// Longest user agent kept with a session.
const MAX_USER_AGENT_CHARS: usize = 256;

#[utoipa::path(
    post,
    path = "/api/auth/register",
    tag = "auth",
    request_body = CredentialsRequest,
    responses(
        BodyErrors,
        (status = 201, description = "created", body = RegisterResponse),
        (status = 409, description = "username taken", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 503, description = "busy: too many password hashes queued", body = ErrorBody),
    )
)]
async fn register(
    State(state): State<AppState>,
    client: Client,
    ApiJson(request): ApiJson<CredentialsRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    state.limits.register(client.key)?;
    validate_username(&request.username)?;
    validate_password(&request.password)?;
    let hash = state.passwords.hash(request.password).await?;
    let id = UserId::new_random();
    let created = state
        .store
        .create_user(NewUser {
            id: id.0,
            username: &request.username,
            password_hash: &hash,
            role: Role::Player.as_str(),
            created_at: store::now(),
        })
        .await?;
    match created {
        CreateUser::Created => Ok((
            StatusCode::CREATED,
            Json(RegisterResponse { user: UserView { id, username: request.username, role: Role::Player } }),
        )),
        CreateUser::UsernameTaken => Err(ApiError::UsernameTaken),
    }
}

#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = CredentialsRequest,
    responses(
        BodyErrors,
        (status = 200, description = "a token pair; the refresh token is also set as the tether_refresh cookie", body = TokenPairResponse),
        (status = 401, description = "wrong username or password", body = ErrorBody),
        (status = 403, description = "banned", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 503, description = "busy: too many password hashes queued", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CredentialsRequest>,
) -> ApiResult<Response> {
    // Only failures count: a right password from a crowded address always gets in.
    let attempt = state.limits.login(client.key, &request.username)?;
    // Longer than any valid password: refuse without spending argon2 time on it.
    if request.password.chars().count() > MAX_PASSWORD_CHARS {
        attempt.failed();
        return Err(ApiError::InvalidCredentials);
    }
    let user = state.store.find_user_by_name(&request.username).await?;
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    if !state.passwords.verify(request.password, stored_hash).await? {
        attempt.failed();
        return Err(ApiError::InvalidCredentials);
    }
    attempt.succeeded();
    let user = user.ok_or(ApiError::InvalidCredentials)?;
    refuse_if_banned(&state, user.id).await?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect());
    let now = store::now();
    let session = SessionRecord::new_live(
        user.id,
        now,
        state.config.session_ttl,
        user_agent,
        Some(client.ip.to_string()),
    );
    let (refresh_token, refresh_hash) = refresh::generate();
    state.store.create_session(&session, &refresh_hash).await?;
    state.sessions.remember(&session);
    // A ban that landed while this login was under way did not see this session.
    if let Err(banned) = refuse_if_banned(&state, user.id).await {
        revoke(&state, RevokeOrder::new(RevokeScope::Session(session.id), RevokeKind::Ban)).await?;
        return Err(banned);
    }
    if state.config.single_session {
        let older = RevokeScope::UserExcept { user: user.id, keep: session.id };
        revoke(&state, RevokeOrder::new(older, RevokeKind::Replaced)).await?;
    }
    tracing::info!(sid = %session.id, user = %user.id, "logged in");
    token_pair(&state, &headers, &user, &session, refresh_token)
}

/// 403 `banned` while the user has a ban that has not lifted yet.
async fn refuse_if_banned(state: &AppState, user_id: uuid::Uuid) -> ApiResult<()> {
    match state.store.active_ban(user_id, store::now()).await? {
        Some(ban) => Err(ApiError::Banned { reason: ban.reason, until: ban.until }),
        None => Ok(()),
    }
}

#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    request_body(content = Option<RefreshRequest>, description = "or an empty body and the tether_refresh cookie"),
    responses(
        (status = 200, description = "a new token pair; the old refresh token is dead", body = TokenPairResponse),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "unknown, rotated, revoked or expired", body = ErrorBody),
        (status = 403, description = "banned", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn refresh(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    state.limits.refresh(client.key)?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let request: RefreshRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_request(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
        request.refresh_token
    };
    let presented = from_body.or_else(|| refresh_cookie(&headers)).ok_or(ApiError::InvalidRefreshToken)?;

    let (next_token, next_hash) = refresh::generate();
    let now = store::now();
    match state.store.rotate_refresh_token(&refresh::hash(&presented), &next_hash, now).await? {
        RefreshOutcome::Unknown => Err(ApiError::InvalidRefreshToken),
        RefreshOutcome::Reused(session) => {
            tracing::warn!(sid = %session.id, "rotated refresh token presented again: revoking the session");
            revoke(&state, RevokeOrder::new(RevokeScope::Session(session.id), RevokeKind::RefreshReuse))
                .await?;
            Err(ApiError::InvalidRefreshToken)
        }
        RefreshOutcome::SessionEnded(session) => {
            refuse_if_banned(&state, session.user_id).await?;
            Err(ended_session_error(&state, &session, now))
        }
        RefreshOutcome::Rotated(session) => {
            if let Err(banned) = refuse_if_banned(&state, session.user_id).await {
                revoke(&state, RevokeOrder::new(RevokeScope::Session(session.id), RevokeKind::Ban)).await?;
                return Err(banned);
            }
            // No second look at the registry: the rotation itself saw the session live
            // in the same transaction, and the new pair names this session, so a
            // revocation landing after it (a logout, or the reuse detection of a
            // concurrent refresh that lost the race) kills the pair at its first use.
            // Checking here would only turn the one winner of a race into a loser.
            state.sessions.remember(&session);
            // Memory may know more than the store: a revocation whose commit failed is
            // refused here until its retry lands. A concurrent reuse detection is the
            // race above, and its loser's pair dies at first use anyway.
            if let Err(SessionProblem::Revoked { revocation, .. }) =
                state.sessions.check(SessionId(session.id), now)
                && revocation.kind != RevokeKind::RefreshReuse
            {
                return Err(ApiError::SessionRevoked);
            }
            let user = state.store.find_user(session.user_id).await?.ok_or(ApiError::InvalidRefreshToken)?;
            token_pair(&state, &headers, &user, &session, next_token)
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        BearerErrors,
        (status = 204, description = "this session revoked; the cookie cleared"),
    )
)]
async fn logout(State(state): State<AppState>, auth: AuthSession<BearerToRevoke>) -> ApiResult<Response> {
    revoke(&state, RevokeOrder::new(RevokeScope::Session(auth.claims.sid.0), RevokeKind::Logout)).await?;
    Ok(no_content_with([(header::SET_COOKIE, clearing_cookie())]))
}

#[utoipa::path(
    post,
    path = "/api/auth/logout-all",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        BearerErrors,
        (status = 204, description = "every session of this user revoked"),
    )
)]
async fn logout_all(State(state): State<AppState>, auth: AuthSession<BearerToRevoke>) -> ApiResult<Response> {
    revoke(&state, RevokeOrder::new(RevokeScope::User(auth.claims.sub.0), RevokeKind::LogoutAll)).await?;
    Ok(no_content_with([(header::SET_COOKIE, clearing_cookie())]))
}

fn ended_session_error(state: &AppState, session: &SessionRecord, now: time::OffsetDateTime) -> ApiError {
    let entry = state.sessions.remember(session);
    match state.sessions.check(entry.id, now) {
        Err(problem) => problem_error(problem),
        // The store saw it ended; memory agrees once the sweep runs.
        Ok(_) => ApiError::SessionExpired,
    }
}

fn problem_error(problem: SessionProblem) -> ApiError {
    match problem {
        SessionProblem::Expired => ApiError::SessionExpired,
        SessionProblem::Revoked { .. } => ApiError::SessionRevoked,
        SessionProblem::Unknown => ApiError::InvalidRefreshToken,
    }
}

fn token_pair(
    state: &AppState,
    headers: &HeaderMap,
    user: &UserRecord,
    session: &SessionRecord,
    refresh_token: String,
) -> ApiResult<Response> {
    let role = Role::parse(&user.role).ok_or_else(|| anyhow::anyhow!("unknown role {:?}", user.role))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let access_token =
        state.keys.current().issue(UserId(user.id), SessionId(session.id), role, &user.username, now)?;
    let remaining = (session.expires_at.unix_timestamp() - now).max(0);
    let cookie = Cookie::build((COOKIE_NAME, refresh_token.clone()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(COOKIE_PATH)
        .max_age(cookie::time::Duration::seconds(remaining))
        .secure(served_over_https(headers))
        .build();
    let body = TokenPairResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.config.access_ttl.as_secs(),
        refresh_token,
        session_id: SessionId(session.id),
        user: UserView { id: UserId(user.id), username: user.username.clone(), role },
    };
    let cookie = HeaderValue::from_str(&cookie.to_string()).map_err(anyhow::Error::from)?;
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

fn clearing_cookie() -> HeaderValue {
    let cookie = Cookie::build((COOKIE_NAME, ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(COOKIE_PATH)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("a cookie without a value is a valid header")
}

fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == COOKIE_NAME)
        .map(|cookie| cookie.value().to_owned())
}

/// TLS ends at a proxy in front of Tether; it says so in `X-Forwarded-Proto` (which
/// the accept loop removes from requests of untrusted peers).
fn served_over_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 128;

fn validate_username(username: &str) -> ApiResult<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if (3..=32).contains(&username.len()) && username.chars().all(allowed) {
        Ok(())
    } else {
        Err(ApiError::unprocessable("username: 3-32 characters of A-Z a-z 0-9 _ -"))
    }
}

fn validate_password(password: &str) -> ApiResult<()> {
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::unprocessable("password: 8-128 characters"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_contract() {
        for good in ["abc", "Player_1", "a-b", &"x".repeat(32)] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        for bad in ["ab", "", "has space", "émile", &"x".repeat(33), "semi;colon"] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        assert!(validate_password(&"é".repeat(8)).is_ok());
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"p".repeat(129)).is_err());
    }
}
