//! `GET /ws`: the upgrade, checked in the contract's order (Origin, then the token),
//! handing each accepted connection to its socket task ([`socket`]).

pub mod outbox;
mod socket;

use crate::app::AppState;
use crate::auth::extract::{AuthFailure, AuthSession, UpgradeToken, WS_PROTOCOL};
use crate::client_ip::Client;
use crate::error::ApiError;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt as _;
use tracing::Instrument as _;

/// Read buffer per socket. Client frames are small (an input is ~50 bytes), and the
/// buffer is zero-filled on first read, so every byte of it is resident for the life
/// of an idle socket; tungstenite's default (128 KiB) would dwarf everything else. A
/// larger message still arrives: the buffer grows for it.
const READ_BUFFER_BYTES: usize = 256;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(state): State<AppState>,
    client: Client,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    auth: Result<AuthSession<UpgradeToken>, AuthFailure>,
) -> Response {
    if !origin_allowed(&headers, &state.config.allowed_origins) {
        return ApiError::Forbidden.into_response();
    }
    if let Err(limited) = state.limits.upgrade(client.key) {
        return limited.into_response();
    }
    let max_message = state.config.ws_max_message;
    let upgrade = upgrade
        .protocols([WS_PROTOCOL])
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message.max(64 * 1024) * 4)
        .max_message_size(max_message)
        .max_frame_size(max_message);
    let task = state.socket_tasks.token();
    match auth {
        Ok(auth) => {
            let request_id = headers.get("x-request-id").and_then(|id| id.to_str().ok()).unwrap_or_default();
            // At debug level, where the socket's own events are: a span costs each
            // socket a few hundred bytes for as long as it is open. No parent, so the
            // upgrade request's span ends with the request.
            let span = tracing::debug_span!(parent: None, "socket", sid = %auth.claims.sid, request_id = %request_id);
            let start = Box::new(socket::Start { auth, state, task });
            // Boxed: the upgrade's task then holds a pointer to the socket's state
            // instead of a second copy of everything it was started with.
            upgrade.on_upgrade(move |ws| socket::run(ws, start).instrument(span).boxed())
        }
        // A browser cannot read the status of a failed upgrade, so the reason is
        // given as a close code right after the handshake; nothing it sends is read.
        Err(failure) => upgrade.on_upgrade(move |ws| async move {
            tracing::debug!(code = failure.close_code(), "upgrade refused after handshake");
            crate::telemetry::metrics::auth_failure(failure.metric_reason());
            socket::refuse(ws, failure.close_code(), &failure.close_reason()).await;
            drop(task);
        }),
    }
}

/// No `Origin`: not a browser, nothing to check. Otherwise the server's own origin,
/// localhost on any port, or one the operator listed.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if allowed.iter().any(|listed| listed.trim().trim_end_matches('/').eq_ignore_ascii_case(&origin)) {
        return true;
    }
    let own_host = headers.get(HOST).and_then(|host| host.to_str().ok()).map(str::to_ascii_lowercase);
    let without_scheme = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    if own_host.is_some() && without_scheme == own_host.as_deref() {
        return true;
    }
    ["http://localhost", "http://127.0.0.1"].iter().any(|local| match origin.strip_prefix(local) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, origin.parse().unwrap());
        headers.insert(HOST, host.parse().unwrap());
        headers
    }

    #[test]
    fn origins_follow_the_contract() {
        let listed = vec!["https://game.example".to_owned()];
        assert!(origin_allowed(&HeaderMap::new(), &[]));
        assert!(origin_allowed(&headers("http://tether.test:8080", "tether.test:8080"), &[]));
        assert!(origin_allowed(&headers("http://localhost:5173", "tether.test"), &[]));
        assert!(origin_allowed(&headers("http://127.0.0.1", "tether.test"), &[]));
        assert!(origin_allowed(&headers("https://game.example", "tether.test"), &listed));
        assert!(!origin_allowed(&headers("https://evil.example", "tether.test"), &listed));
        assert!(!origin_allowed(&headers("http://localhost.evil.example", "tether.test"), &[]));
        assert!(!origin_allowed(&headers("http://127.0.0.1:80@evil", "tether.test"), &[]));
        assert!(!origin_allowed(&headers("null", "tether.test"), &[]));
    }
}
