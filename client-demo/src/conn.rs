//! One WebSocket client connection: TCP from the next source address, the upgrade
//! with `Authorization: Bearer`, and the `welcome` frame that proves the server took
//! the token; then the ways a connection ends, as failure kinds.

use crate::stats::{HINTS, Hints, describe_io};
use crate::target::Target;
use futures_util::{SinkExt as _, StreamExt as _};
use std::time::Duration;
use tether_shared::close;
use tether_shared::ws::{ClientMessage, ServerMessage};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

pub type Ws = WebSocketStream<TcpStream>;

/// A socket the server accepted.
pub struct Opened {
    pub ws: Ws,
    /// From the start of the TCP connect to the `101 Switching Protocols`.
    pub time_to_upgrade: Duration,
    /// From the start of the TCP connect to the `welcome` frame.
    pub time_to_welcome: Duration,
    pub welcomed_at: Instant,
}

/// The frames here are small: tungstenite's default buffers (128 KiB each, the read
/// one zero-filled) would cost more than everything else a socket holds.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Connects, upgrades with the token and waits for `welcome`, all within `patience`.
pub async fn open(target: &Target, token: &str, patience: Duration) -> Result<Opened, String> {
    let started = Instant::now();
    let deadline = started + patience;
    let stream = match timeout_at(deadline, target.tcp_connect()).await {
        Err(_) => return Err("tcp connect: timed out".into()),
        Ok(Err(error)) => return Err(describe_io("tcp connect", &error)),
        Ok(Ok(stream)) => stream,
    };
    let request = ClientRequestBuilder::new(target.ws_uri.clone())
        .with_header("Authorization", format!("Bearer {token}"));
    let mut ws = match timeout_at(deadline, client_async_with_config(request, stream, Some(config()))).await {
        Err(_) => return Err("upgrade: timed out".into()),
        Ok(Err(error)) => return Err(describe_ws("upgrade", &error)),
        Ok(Ok((ws, _response))) => ws,
    };
    let time_to_upgrade = started.elapsed();
    match timeout_at(deadline, ws.next()).await {
        Err(_) => Err("welcome: timed out".into()),
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<ServerMessage>(text.as_str()) {
            Ok(ServerMessage::Welcome { .. }) => {
                let welcomed_at = Instant::now();
                Ok(Opened { ws, time_to_upgrade, time_to_welcome: welcomed_at - started, welcomed_at })
            }
            _ => Err("welcome: first frame was something else".into()),
        },
        Ok(Some(Ok(Message::Close(frame)))) => {
            Err(format!("closed before welcome: {}", describe_close(frame.as_ref())))
        }
        Ok(Some(Ok(_))) => Err("welcome: first frame was something else".into()),
        Ok(Some(Err(error))) => Err(describe_ws("welcome", &error)),
        Ok(None) => Err("welcome: connection ended".into()),
    }
}

/// Sends one client message as a text frame.
pub async fn send(ws: &mut Ws, message: &ClientMessage) -> Result<(), WsError> {
    let text = serde_json::to_string(message).expect("client messages serialize");
    ws.send(Message::text(text)).await
}

/// How a socket ended, as seen by the client.
#[derive(Debug, Clone)]
pub struct Closed {
    pub at: Instant,
    /// The close frame's code, if the server sent one.
    pub code: Option<u16>,
    pub reason: String,
}

impl Closed {
    /// `4001 revoked`, `1008 slow consumer`, `no close frame: connection reset`.
    pub fn kind(&self) -> String {
        match self.code {
            Some(code) => format!("{code} {}", reason_kind(&self.reason)),
            None => self.reason.clone(),
        }
    }
}

/// Reads (and drops) frames until the server closes the socket or `stop` fires.
/// `None`: stopped with the socket still open.
pub async fn read_until_closed(ws: &mut Ws, stop: &tokio_util::sync::CancellationToken) -> Option<Closed> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            frame = ws.next() => if let Some(closed) = closed_by(frame) {
                return Some(closed);
            },
        }
    }
}

/// What a frame read means for the socket's life: `Some` when it has ended.
pub fn closed_by(frame: Option<Result<Message, WsError>>) -> Option<Closed> {
    let at = Instant::now();
    match frame {
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = match frame {
                Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
                None => (1005, String::new()),
            };
            if code == close::POLICY && reason.contains("rate") {
                Hints::note(&HINTS.message_rate);
            }
            Some(Closed { at, code: Some(code), reason })
        }
        Some(Ok(_)) => None,
        Some(Err(error)) => Some(Closed { at, code: None, reason: describe_ws("no close frame", &error) }),
        None => Some(Closed { at, code: None, reason: "no close frame: connection ended".into() }),
    }
}

/// Closes from our side (1000) and waits, within `patience`, for the server's reply.
/// True when the server answered the close.
pub async fn close_normally(ws: &mut Ws, patience: Duration) -> bool {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    timeout(patience, async {
        if ws.close(Some(frame)).await.is_err() {
            return false;
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(WsError::ConnectionClosed)) | None => return true,
                Some(Ok(_)) => continue,
                Some(Err(_)) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// After the server's close frame: let tungstenite send its reply and see the end of
/// the stream, within `patience`.
pub async fn finish_after_close(ws: &mut Ws, patience: Duration) {
    let _ = timeout(patience, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// `1008 slow consumer` for a close frame, `no code` without one.
pub fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) => format!("{} {}", u16::from(frame.code), reason_kind(frame.reason.as_str())),
        None => "no code".into(),
    }
}

/// The part of a close reason before `: <admin's reason>`, so that kinds stay few.
fn reason_kind(reason: &str) -> &str {
    reason.split(':').next().unwrap_or_default().trim()
}

pub fn describe_ws(stage: &str, error: &WsError) -> String {
    match error {
        WsError::Http(response) => {
            let status = response.status();
            if status.as_u16() == 429 {
                Hints::note(&HINTS.rate_limited);
            }
            format!("{stage}: http {}", status.as_u16())
        }
        WsError::Io(io) => describe_io(stage, io),
        WsError::ConnectionClosed | WsError::AlreadyClosed => format!("{stage}: connection closed"),
        WsError::Protocol(problem) => format!("{stage}: protocol error: {problem}"),
        WsError::Capacity(problem) => format!("{stage}: too big: {problem}"),
        other => format!("{stage}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_kinds_drop_the_admins_reason() {
        let closed = Closed { at: Instant::now(), code: Some(4004), reason: "kicked: spamming".into() };
        assert_eq!(closed.kind(), "4004 kicked");
        let closed = Closed { at: Instant::now(), code: Some(4001), reason: "revoked".into() };
        assert_eq!(closed.kind(), "4001 revoked");
    }
}
