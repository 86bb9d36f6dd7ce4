//! The one extractor for an authenticated session, used by every protected route
//! and by the WebSocket upgrade. It verifies the token's signature and asks the
//! registry; it never touches the database.

use crate::app::AppState;
use crate::auth::jwt::AccessClaims;
use crate::error::ApiError;
use crate::services::ServiceCaller;
use crate::sessions::{SessionEntry, SessionProblem};
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::marker::PhantomData;
use std::sync::Arc;
use tether_shared::api::Role;
use tether_shared::{SessionId, close};

/// The subprotocol a browser offers, and that the server selects.
pub const WS_PROTOCOL: &str = "tether.v1";
/// A browser, which cannot set headers on an upgrade, sends its token as the
/// subprotocol `tether.bearer.<jwt>` next to [`WS_PROTOCOL`].
pub const WS_TOKEN_PROTOCOL_PREFIX: &str = "tether.bearer.";

/// Why a request is not authenticated.
#[derive(Debug)]
pub enum AuthFailure {
    /// Missing, malformed, forged or expired token.
    InvalidToken,
    /// The token is sound but its session cannot be used.
    Session(SessionProblem),
    /// The token and its session look fine, but this node has not been able to read
    /// the revocation log for too long to vouch for them (the contract's "Cluster").
    Stale,
}

impl AuthFailure {
    pub fn close_code(&self) -> u16 {
        match self {
            AuthFailure::InvalidToken => close::INVALID_TOKEN,
            AuthFailure::Session(problem) => problem.close_code(),
            AuthFailure::Stale => close::TRY_AGAIN_LATER,
        }
    }

    /// The `reason` label of `tether_auth_failures_total`, as the HTTP error code.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            AuthFailure::InvalidToken | AuthFailure::Session(SessionProblem::Unknown) => "invalid_token",
            AuthFailure::Session(SessionProblem::Revoked { .. }) => "session_revoked",
            AuthFailure::Session(SessionProblem::Expired) => "session_expired",
            AuthFailure::Stale => "not_ready",
        }
    }

    pub fn close_reason(&self) -> String {
        match self {
            AuthFailure::InvalidToken => close::reason("invalid token", Some("refresh and reconnect")),
            AuthFailure::Session(problem) => problem.close_reason(),
            AuthFailure::Stale => close::reason("try again later", Some("this node is catching up")),
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> ApiError {
        match failure {
            AuthFailure::InvalidToken | AuthFailure::Session(SessionProblem::Unknown) => {
                ApiError::InvalidToken
            }
            AuthFailure::Session(SessionProblem::Revoked { .. }) => ApiError::SessionRevoked,
            AuthFailure::Session(SessionProblem::Expired) => ApiError::SessionExpired,
            AuthFailure::Stale => ApiError::NotReady,
        }
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Where a route takes its token from.
pub trait TokenSource: Send + Sync + 'static {
    /// Whether a session that this node revoked but could not yet commit is let
    /// through: only for the calls that revoke it, so that their retry commits it.
    const RETRIES_A_REVOCATION: bool = false;

    fn token(parts: &Parts) -> Result<String, AuthFailure>;
}

/// `Authorization: Bearer <jwt>` only: every HTTP route.
pub struct BearerHeader;

/// `Authorization: Bearer <jwt>` on a call that revokes the caller's own session
/// (logout, logout-all, session delete).
pub struct BearerToRevoke;

impl TokenSource for BearerToRevoke {
    const RETRIES_A_REVOCATION: bool = true;

    fn token(parts: &Parts) -> Result<String, AuthFailure> {
        BearerHeader::token(parts)
    }
}

/// The upgrade's three transports, first present wins: the `Authorization` header,
/// the `tether.bearer.<jwt>` subprotocol, the `access_token` query parameter.
pub struct UpgradeToken;

impl TokenSource for BearerHeader {
    fn token(parts: &Parts) -> Result<String, AuthFailure> {
        let header = parts.headers.get(AUTHORIZATION).ok_or(AuthFailure::InvalidToken)?;
        bearer_token(header.as_bytes())
    }
}

impl TokenSource for UpgradeToken {
    fn token(parts: &Parts) -> Result<String, AuthFailure> {
        if let Some(header) = parts.headers.get(AUTHORIZATION) {
            return bearer_token(header.as_bytes());
        }
        let from_protocol = parts
            .headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|protocol| protocol.trim().strip_prefix(WS_TOKEN_PROTOCOL_PREFIX));
        if let Some(token) = from_protocol {
            return Ok(token.to_owned());
        }
        parts
            .uri
            .query()
            .and_then(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "access_token")
                    .map(|(_, token)| token.into_owned())
            })
            .ok_or(AuthFailure::InvalidToken)
    }
}

fn bearer_token(header: &[u8]) -> Result<String, AuthFailure> {
    let text = std::str::from_utf8(header).map_err(|_| AuthFailure::InvalidToken)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthFailure::InvalidToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthFailure::InvalidToken);
    }
    Ok(token.to_owned())
}

/// An authenticated session: a verified token whose session is live on this node.
pub struct AuthSession<S = BearerHeader> {
    pub claims: AccessClaims,
    pub session: Arc<SessionEntry>,
    source: PhantomData<S>,
}

impl<S: TokenSource> FromRequestParts<AppState> for AuthSession<S> {
    type Rejection = AuthFailure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = S::token(parts)?;
        let auth = AuthSession::<S>::check(state, &token).await?;
        tracing::Span::current().record("sid", tracing::field::display(auth.claims.sid));
        Ok(auth)
    }
}

impl<S: TokenSource> AuthSession<S> {
    /// What every Bearer route asks of a token (introspection too): the signature and
    /// claims, then the registry's word on the session, then this node's freshness.
    pub async fn check(state: &AppState, token: &str) -> Result<AuthSession<S>, AuthFailure> {
        let claims = state.keys.current().verify(token).map_err(|_| AuthFailure::InvalidToken)?;
        let session = match state.sessions.check(claims.sid, crate::store::now()) {
            // Signed by us but not known here: a session another node just created.
            Err(SessionProblem::Unknown) => load_missing_session(state, claims.sid).await?,
            Err(SessionProblem::Revoked { revocation, .. })
                if S::RETRIES_A_REVOCATION && !revocation.is_persisted() =>
            {
                state.sessions.get(claims.sid).ok_or(AuthFailure::InvalidToken)?
            }
            known => known.map_err(AuthFailure::Session)?,
        };
        if session.user_id != claims.sub {
            return Err(AuthFailure::InvalidToken);
        }
        // After the token's own checks: a token this node knows to be bad is told so.
        if state.log.is_stale() {
            return Err(AuthFailure::Stale);
        }
        Ok(AuthSession { claims, session, source: PhantomData })
    }
}

/// One (coalesced) read of a session the registry does not know, then the usual
/// check. The only database read a request can cause, and only once per session.
async fn load_missing_session(state: &AppState, id: SessionId) -> Result<Arc<SessionEntry>, AuthFailure> {
    // A node that cannot vouch must not start to by waiting: a database that hangs
    // (rather than refuses) would hold the request until it came back, and the node
    // would then accept, long after it should have said 503.
    if state.log.is_stale() {
        return Err(AuthFailure::Stale);
    }
    let load = state.misses.load(id, || state.store.find_session(id.0));
    let loaded = match state.log.stale_at() {
        Some(deadline) => {
            tokio::time::timeout_at(deadline.into(), load).await.map_err(|_| AuthFailure::Stale)?
        }
        None => load.await,
    };
    // A store that cannot answer says nothing about the token: "try again", not "forged".
    let loaded = loaded.map_err(|error| {
        tracing::warn!(error = format!("{error:#}"), "cannot load an unknown session");
        AuthFailure::Stale
    })?;
    let record = loaded.ok_or(AuthFailure::Session(SessionProblem::Unknown))?;
    state.sessions.remember(&record);
    state.sessions.check(id, crate::store::now()).map_err(AuthFailure::Session)
}

/// An authenticated session whose token says `role: admin`.
pub struct AdminSession(pub AuthSession);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = AuthSession::<BearerHeader>::from_request_parts(parts, state).await?;
        if auth.claims.role != Role::Admin {
            return Err(ApiError::Forbidden);
        }
        Ok(AdminSession(auth))
    }
}

/// Another service of the game, by its credential: `Authorization: Basic` with
/// `client_id:client_secret` (RFC 7617), else 401 `invalid_client`.
pub struct ServiceAuth(pub ServiceCaller);

impl FromRequestParts<AppState> for ServiceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (client_id, secret) = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|header| basic_credentials(header.as_bytes()))
            .ok_or(ApiError::InvalidClient)?;
        state.services.check(&client_id, &secret).map(ServiceAuth).ok_or(ApiError::InvalidClient)
    }
}

fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    use base64::Engine as _;
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: axum::http::Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn bearer_header_takes_the_scheme_in_any_case() {
        let request = axum::http::Request::get("/").header("authorization", "bearer abc").body(()).unwrap();
        assert_eq!(BearerHeader::token(&parts(request)).unwrap(), "abc");
        for bad in ["abc", "Basic abc", "Bearer ", "Bearer"] {
            let request = axum::http::Request::get("/").header("authorization", bad).body(()).unwrap();
            assert!(BearerHeader::token(&parts(request)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        assert_eq!(basic_credentials(b"Basic c3ZjX2E6czpiOmM="), Some(("svc_a".into(), "s:b:c".into())));
        assert_eq!(basic_credentials(b"basic c3ZjX2E6"), Some(("svc_a".into(), String::new())));
        for bad in [&b"Bearer c3ZjX2E6cw=="[..], b"Basic !!!", b"Basic c3ZjX2E=", b"Basic"] {
            assert_eq!(basic_credentials(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn upgrade_token_prefers_header_then_protocol_then_query() {
        let request = axum::http::Request::get("/ws?access_token=q")
            .header("sec-websocket-protocol", "tether.v1, tether.bearer.p")
            .body(())
            .unwrap();
        assert_eq!(UpgradeToken::token(&parts(request)).unwrap(), "p");
        let request = axum::http::Request::get("/ws?x=1&access_token=q%2Bq").body(()).unwrap();
        assert_eq!(UpgradeToken::token(&parts(request)).unwrap(), "q+q");
        let request = axum::http::Request::get("/ws?access_token=q")
            .header("authorization", "Token nope")
            .body(())
            .unwrap();
        assert!(UpgradeToken::token(&parts(request)).is_err(), "a malformed header is not skipped");
    }
}
