//! `GET /ws`: the upgrade (Origin, then token) and the socket loop.
//!
//! Each socket is one task. It `select!`s, in this priority, over its session's close
//! order, the server's shutdown, its bounded outbound queue, and inbound frames. A
//! close order also cuts into a write in progress, so a close frame is never stuck
//! behind queued traffic; a connection that cannot take the close frame at once is
//! aborted instead of waited on.

use crate::app::AppState;
use crate::auth::extract::{AuthFailure, AuthSession, UpgradeToken, WS_PROTOCOL};
use crate::error::ApiError;
use crate::sessions::CloseOrder;
use crate::store;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{FutureExt as _, SinkExt as _};
use std::time::Duration;
use tether_shared::api::UserView;
use tether_shared::close;
use tether_shared::ws::{BAD_MESSAGE, ClientMessage, ServerMessage, pong_frame};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::Instrument as _;

/// Read buffer per socket. Game frames are small; tungstenite's default (128 KiB,
/// zero-filled) would cost more than everything else a socket holds.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How long a closing socket waits for the peer's close reply before dropping it.
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// How long a shutdown or a refused upgrade may wait to write its close frame.
const CLOSE_WRITE_PATIENCE: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    auth: Result<AuthSession<UpgradeToken>, AuthFailure>,
) -> Response {
    if !origin_allowed(&headers, &state.config.allowed_origins) {
        return ApiError::Forbidden.into_response();
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
            let span = tracing::info_span!("socket", sid = %auth.claims.sid);
            upgrade.on_upgrade(move |socket| {
                async move {
                    run_socket(socket, auth, state).await;
                    drop(task);
                }
                .instrument(span)
            })
        }
        // A browser cannot read the status of a failed upgrade, so the reason is
        // given as a close code right after the handshake; nothing it sends is read.
        Err(failure) => upgrade.on_upgrade(move |mut socket| async move {
            tracing::debug!(code = failure.close_code(), "upgrade refused after handshake");
            if write_close(
                &mut socket,
                failure.close_code(),
                &failure.close_reason(),
                Some(CLOSE_WRITE_PATIENCE),
            )
            .await
            {
                linger(socket).await;
            }
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

/// How a socket's loop ended.
enum SocketEnd {
    /// The session was revoked or ended: close with its code, then confirm.
    Ordered(CloseOrder),
    /// The server ends it for its own reason.
    Close(u16, &'static str),
    /// The peer sent its close; tungstenite has queued the reply.
    PeerClosed,
    /// The connection is gone.
    Gone,
}

async fn run_socket(mut socket: WebSocket, auth: AuthSession<UpgradeToken>, state: AppState) {
    let (_registration, mut close_order) = match state.sessions.attach_socket(&auth.session, store::now()) {
        Ok(attached) => attached,
        Err(problem) => {
            write_close(
                &mut socket,
                problem.close_code(),
                &problem.close_reason(),
                Some(CLOSE_WRITE_PATIENCE),
            )
            .await;
            return;
        }
    };
    let (outbound, mut queued) = mpsc::channel::<Message>(state.config.ws_outbound_queue.max(2));
    let welcome = ServerMessage::Welcome {
        session_id: auth.claims.sid,
        user: UserView { id: auth.claims.sub, username: auth.claims.name.clone(), role: auth.claims.role },
        server_time: store::now(),
    };
    let _ = outbound.try_send(encode(&welcome));
    let max_bad_frames = state.config.ws_max_bad_frames;
    let mut bad_frames = 0u32;

    let end = loop {
        tokio::select! {
            biased;
            order = &mut close_order => break order.map_or(SocketEnd::Gone, SocketEnd::Ordered),
            _ = state.shutdown.cancelled() => break SocketEnd::Close(close::GOING_AWAY, "server shutting down"),
            Some(frame) = queued.recv() => {
                tokio::select! {
                    biased;
                    order = &mut close_order => break order.map_or(SocketEnd::Gone, SocketEnd::Ordered),
                    sent = socket.send(frame) => if sent.is_err() { break SocketEnd::Gone },
                }
            }
            incoming = socket.recv() => {
                let reply = match incoming {
                    Some(Ok(Message::Text(text))) => match ClientMessage::decode(&text) {
                        Ok(ClientMessage::Ping { t }) => Ok(Message::text(pong_frame(&t))),
                        Err(bad) => Err(bad.0),
                    },
                    Some(Ok(Message::Binary(_))) => Err("binary frames are not used: send JSON text"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) => break SocketEnd::PeerClosed,
                    Some(Err(error)) if is_too_big(&error) => break SocketEnd::Close(close::TOO_BIG, "message too big"),
                    Some(Err(_)) | None => break SocketEnd::Gone,
                };
                let frame = match reply {
                    Ok(frame) => frame,
                    Err(why) => {
                        bad_frames += 1;
                        if bad_frames > max_bad_frames {
                            break SocketEnd::Close(close::POLICY, "too many bad frames");
                        }
                        encode(&ServerMessage::Error { code: BAD_MESSAGE.to_owned(), message: why.to_owned() })
                    }
                };
                if let Err(TrySendError::Full(_)) = outbound.try_send(frame) {
                    break SocketEnd::Close(close::POLICY, "slow consumer");
                }
            }
        }
    };
    finish(socket, end).await;
}

async fn finish(mut socket: WebSocket, end: SocketEnd) {
    let written = match end {
        SocketEnd::Gone => false,
        SocketEnd::PeerClosed => {
            let _ = tokio::time::timeout(CLOSE_WRITE_PATIENCE, socket.flush()).await;
            false
        }
        SocketEnd::Ordered(order) => {
            // At once or never: a revocation does not wait on a slow peer. Dropping
            // the order afterwards tells the revoker this socket is done.
            let written = write_close(&mut socket, order.code, &order.reason, None).await;
            drop(order);
            written
        }
        SocketEnd::Close(code, reason) => {
            let patience = (code == close::GOING_AWAY).then_some(CLOSE_WRITE_PATIENCE);
            write_close(&mut socket, code, reason, patience).await
        }
    };
    if written {
        linger(socket).await;
    }
}

/// Writes a close frame to the connection. With no patience it must go through on
/// the first try; otherwise it may wait that long. False: the socket is to be dropped.
async fn write_close(socket: &mut WebSocket, code: u16, reason: &str, patience: Option<Duration>) -> bool {
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    let sent = match patience {
        None => socket.send(frame).now_or_never(),
        Some(patience) => tokio::time::timeout(patience, socket.send(frame)).await.ok(),
    };
    matches!(sent, Some(Ok(())))
}

/// Reads (and ignores) until the peer answers the close or the linger ends, so the
/// connection ends with a FIN after our close frame, not a reset that could discard it.
async fn linger(mut socket: WebSocket) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn is_too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error;
    matches!(error.source().and_then(|inner| inner.downcast_ref::<Error>()), Some(Error::Capacity(_)))
}

fn encode(message: &ServerMessage) -> Message {
    Message::text(serde_json::to_string(message).expect("server messages always serialize"))
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
