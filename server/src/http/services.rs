//! What the game's other services call: the public keys (JWKS), token introspection,
//! and the revocation snapshot and stream.

use crate::app::AppState;
use crate::auth::{AuthFailure, AuthSession, BearerHeader, ServiceAuth};
use crate::error::{ApiError, ApiResult};
use crate::feed::{self, FeedItem};
use crate::store::LogCursor;
use crate::telemetry::metrics;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use std::convert::Infallible;
use std::time::Duration;
#[allow(unused_imports)]
use tether_shared::api::ErrorBody;
use tether_shared::api::{IntrospectionResponse, RevocationSnapshot};

/// The contract's comment interval on revocation streams.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/auth/introspect", post(introspect))
        .route("/api/auth/revocations/snapshot", get(snapshot))
        .route("/api/auth/revocations", get(stream))
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "services",
    description = "The public halves of the Ed25519 signing keys (`kty: OKP`); HMAC keys never appear. \
        A consumer that meets an unknown `kid` fetches this again.",
    responses((status = 200, description = "`{keys: [JWK]}`, cacheable for 300 s", content_type = "application/json", body = Object))
)]
async fn jwks(State(state): State<AppState>) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::CACHE_CONTROL, HeaderValue::from_static("max-age=300")),
    ];
    (headers, state.keys.current().jwks()).into_response()
}

/// `{"token": ...}`, the JSON form of introspection.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub(super) struct IntrospectionRequest {
    token: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/auth/introspect",
    tag = "services",
    description = "RFC 7662. The token comes as the form field `token` or as `{\"token\"}`; it is active when a \
        Bearer route would accept it (signature, claims, leeway, and this node's session registry). \
        `token_type_hint` is ignored. The credential is checked before the body.",
    request_body(content(
        (IntrospectionRequest = "application/x-www-form-urlencoded"),
        (IntrospectionRequest = "application/json"),
    )),
    security(("service" = [])),
    responses(
        (status = 200, description = "`{active: false}`, or the claims with `active: true`", body = IntrospectionResponse),
        (status = 400, description = "no `token`, or a body that does not parse", body = ErrorBody),
        (status = 401, description = "`invalid_client`: missing or wrong service credentials", body = ErrorBody),
        (status = 503, description = "`not_ready`: this node cannot vouch for sessions right now", body = ErrorBody),
    )
)]
async fn introspect(
    State(state): State<AppState>,
    _caller: ServiceAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<IntrospectionResponse>> {
    let token = token_of(&headers, &body)?;
    let answer = match AuthSession::<BearerHeader>::check(&state, &token).await {
        Ok(auth) => {
            let claims = auth.claims;
            IntrospectionResponse {
                active: true,
                sub: Some(claims.sub),
                sid: Some(claims.sid),
                jti: Some(claims.jti),
                iss: Some(claims.iss),
                aud: Some(claims.aud),
                iat: Some(claims.iat),
                exp: Some(claims.exp),
                name: Some(claims.name),
                role: Some(claims.role),
                token_type: Some("access_token".to_owned()),
            }
        }
        Err(AuthFailure::Stale) => return Err(ApiError::NotReady),
        Err(_) => IntrospectionResponse::default(),
    };
    metrics::introspected(answer.active);
    Ok(Json(answer))
}

/// The `token` of a form body (RFC 7662) or of a JSON one.
fn token_of(headers: &HeaderMap, body: &[u8]) -> ApiResult<String> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let token = if content_type.trim_start().to_ascii_lowercase().starts_with("application/json") {
        serde_json::from_slice::<IntrospectionRequest>(body)
            .map_err(|error| {
                ApiError::invalid_request(StatusCode::BAD_REQUEST, format!("malformed JSON: {error}"))
            })?
            .token
    } else {
        form_urlencoded::parse(body).find(|(name, _)| name == "token").map(|(_, token)| token.into_owned())
    };
    token.filter(|token| !token.is_empty()).ok_or_else(|| {
        ApiError::invalid_request(StatusCode::BAD_REQUEST, "the token to introspect is missing")
    })
}

#[utoipa::path(
    get,
    path = "/api/auth/revocations/snapshot",
    tag = "services",
    description = "Every revoked session whose lifetime has not ended, as of `cursor`; follow the stream from \
        `cursor` to miss nothing after it.",
    security(("service" = [])),
    responses(
        (status = 200, description = "the snapshot", body = RevocationSnapshot),
        (status = 401, description = "`invalid_client`", body = ErrorBody),
        (status = 503, description = "`not_ready`: this node cannot vouch for sessions right now", body = ErrorBody),
    )
)]
async fn snapshot(
    State(state): State<AppState>,
    _caller: ServiceAuth,
) -> ApiResult<Json<RevocationSnapshot>> {
    if state.log.is_stale() {
        return Err(ApiError::NotReady);
    }
    // A cluster node streams only what its follower has applied, which may be a
    // moment behind a revocation this very node just answered: catch up first, so that
    // a snapshot taken after a revoking call's answer includes it.
    if state.bus.is_some() {
        crate::cluster::catch_up(&state).await;
    }
    let up_to = state.feed.get();
    let revoked = state.store.revoked_sessions_alive(up_to, crate::store::now()).await?;
    Ok(Json(RevocationSnapshot {
        cursor: feed::encode_cursor(LogCursor::after_event(up_to)),
        revoked: revoked.iter().map(feed::event_of).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/auth/revocations",
    tag = "services",
    description = "Server-Sent Events: `event: revoked` with `id: <cursor>` and `data: {sid, sub, kind, at, \
        session_expires_at}`, one per revoked session after the cursor, in log order, on every node alike; \
        a comment every 15 s. `Last-Event-ID` wins over `after`; neither: from now on. A cursor the log no \
        longer keeps (or never gave) gets `event: reset` and the end of the stream. A consumer that stops \
        reading is cut off. The stream never ends by itself.",
    params(
        ("after" = Option<String>, Query, description = "resume after this cursor"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this cursor (wins over `after`)"),
    ),
    security(("service" = [])),
    responses(
        (status = 200, description = "the event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "a cursor that does not parse", body = ErrorBody),
        (status = 401, description = "`invalid_client`", body = ErrorBody),
    )
)]
async fn stream(
    State(state): State<AppState>,
    ServiceAuth(caller): ServiceAuth,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Not UTF-8 is as unparsable as any other garbage: lossy text, then the parser refuses it.
    let from_header =
        headers.get("last-event-id").map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let from_query = uri.query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "after")
            .map(|(_, after)| after.into_owned())
    });
    let cursor = match from_header.or(from_query) {
        Some(text) => Some(feed::decode_cursor(&text).ok_or_else(|| {
            ApiError::invalid_request(
                StatusCode::BAD_REQUEST,
                "the cursor does not parse; use an event id as sent",
            )
        })?),
        None => None,
    };
    let (queue, items) = tokio::sync::mpsc::channel(feed::QUEUE);
    match feed::starting_point(&state, cursor).await? {
        feed::Start::After(start) => {
            tracing::info!(service = %caller.name, "revocation stream opened");
            let state = state.clone();
            tokio::spawn(async move {
                metrics::feed_streams(1.0);
                feed::produce(state, caller, start, queue).await;
                metrics::feed_streams(-1.0);
            });
        }
        feed::Start::Reset => {
            let _ = queue.try_send(FeedItem::Reset);
        }
    }
    let events = futures_util::stream::unfold(items, |mut items| async move {
        let item = items.recv().await?;
        let event = match item {
            FeedItem::Revoked { cursor, event } => {
                Event::default().id(cursor).event("revoked").json_data(event).unwrap_or_default()
            }
            FeedItem::Reset => Event::default().event("reset").data("{}"),
        };
        Some((Ok(event), items))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_EVERY)))
}
