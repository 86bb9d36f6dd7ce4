//! One socket's task, from `welcome` to its close frame.
//!
//! It `select!`s, in this priority, over its session's close order, the server's
//! shutdown, its slow-consumer signal, its bounded outbound queue, its ping timer,
//! and inbound frames. A close order also cuts into a write in progress, so a close frame is
//! never stuck behind queued traffic; a connection that cannot take the close frame
//! at once is aborted instead of waited on.

use super::outbox::{Outbox, Outgoing};
use crate::app::AppState;
use crate::auth::extract::{AuthSession, UpgradeToken};
use crate::game::{Player, PlayerEnd};
use crate::limits::TokenBucket;
use crate::sessions::{CloseOrder, SocketGuard};
use crate::store;
use crate::telemetry::metrics;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{FutureExt as _, SinkExt as _};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tether_shared::api::UserView;
use tether_shared::close;
use tether_shared::ws::ServerMessage;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// How long a closing socket leaves the peer's close reply unread.
const LINGER_GRACE: Duration = Duration::from_millis(250);
/// How long a closing socket waits for the peer's close reply before dropping it.
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// How long a close of the server's own (shutdown, policy, a refused upgrade) may
/// wait to be written; a revocation's close never waits.
const CLOSE_WRITE_PATIENCE: Duration = Duration::from_secs(2);
/// A single frame that cannot be written for this long marks its reader as slow.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(10);

/// How a socket's loop ended.
enum SocketEnd {
    /// The session was revoked or ended: close with its code, then confirm.
    Ordered(CloseOrder),
    /// The server ends it for its own reason.
    Close(u16, Cow<'static, str>),
    /// The peer sent its close; tungstenite has queued the reply.
    PeerClosed,
    /// The connection is gone.
    Gone,
}

/// Closes a socket whose upgrade was refused, reading nothing it sent.
pub(super) async fn refuse(mut socket: WebSocket, code: u16, reason: &str) {
    if write_close(&mut socket, code, reason, Some(CLOSE_WRITE_PATIENCE)).await {
        linger(socket).await;
    }
}

/// What a socket's task starts from.
pub(super) struct Start {
    pub auth: AuthSession<UpgradeToken>,
    pub state: AppState,
    /// Held while the socket lives, so that a stop can wait for it.
    pub task: TaskTrackerToken,
}

/// What the socket's loop holds, once the socket is registered and welcomed.
struct Admitted {
    state: AppState,
    _task: TaskTrackerToken,
    _registration: SocketGuard,
    close_order: oneshot::Receiver<CloseOrder>,
    outbox: Arc<Outbox>,
    player: Player,
}

/// Registers the socket with its session and queues its welcome; or the close code
/// and reason it is refused with.
fn admit(start: Start) -> Result<Admitted, (u16, String)> {
    let Start { auth, state, task } = start;
    let config = &state.config;
    let (registration, close_order) = match state.sessions.attach_socket_within(
        &auth.session,
        store::now(),
        config.max_sockets_per_session,
    ) {
        Ok(Some(attached)) => attached,
        Ok(None) => return Err((close::POLICY, "too many sockets".to_owned())),
        Err(problem) => return Err((problem.close_code(), problem.close_reason())),
    };
    // Room-wide bursts must fit: a full room joining at once is one presence frame per
    // player, and that reader is not slow. The queue holds memory only while it is full.
    let queue = config.ws_outbound_queue.max(2 * config.room_capacity as usize);
    let outbox = Arc::new(Outbox::new(queue, config.ws_slow_consumer_drops));
    outbox.push_message(&ServerMessage::Welcome {
        session_id: auth.claims.sid,
        user: UserView { id: auth.claims.sub, username: auth.claims.name.clone(), role: auth.claims.role },
        server_time: store::now(),
    });
    let player = Player::new(
        auth.claims.sub,
        &auth.claims.name,
        state.rooms.clone(),
        outbox.clone(),
        config.ws_max_bad_frames,
    );
    Ok(Admitted { _task: task, _registration: registration, close_order, outbox, player, state })
}

/// The socket's task. Not an `async fn`, whose arguments would each be stored twice in
/// the future (as passed and as bound): thousands of idle sockets hold this state.
#[expect(clippy::manual_async_fn, reason = "an async fn would store the socket twice")]
pub(super) fn run(mut socket: WebSocket, start: Box<Start>) -> impl Future<Output = ()> + Send {
    async move {
        // Sync, so that the claims and the start's box are gone before the first await.
        let Admitted { state, _task, _registration, mut close_order, outbox, mut player } =
            match admit(*start) {
                Ok(admitted) => admitted,
                Err((code, reason)) => return Box::pin(refuse(socket, code, &reason)).await,
            };
        let config = &state.config;
        let mut allowance = (config.ws_messages_per_second > 0)
            .then(|| TokenBucket::new(config.ws_message_burst.max(1), config.ws_messages_per_second as f32));
        let ping_every = config.ws_ping_interval;
        // A random phase: sockets opened in a burst must not all be pinged in one burst.
        let first_ping = ping_every.mul_f32(rand::random_range(0.5..1.5));
        let mut ping = tokio::time::interval_at(Instant::now() + first_ping, ping_every);
        let mut heard_at = Instant::now();
        // Pinned once: a fresh `cancelled()` each turn would take the token's lock
        // twice for every frame in and out.
        let shutdown = state.shutdown.cancelled();
        tokio::pin!(shutdown);

        let end = loop {
            let outcome = tokio::select! {
                biased;
                order = &mut close_order => Err(order.map_or(SocketEnd::Gone, SocketEnd::Ordered)),
                _ = &mut shutdown => Err(SocketEnd::Close(close::GOING_AWAY, shutdown_reason())),
                outgoing = outbox.next() => match outgoing {
                    // Boxed: a write's state is the largest the loop awaits, and idle
                    // sockets would carry it inline.
                    Outgoing::Frame(frame) => {
                        let snapshot_of = frame.snapshot_of;
                        let sent = Box::pin(send_unless_closed(&mut socket, &mut close_order, &outbox, frame.into_message())).await;
                        if let (Some(ticked_at), Ok(())) = (snapshot_of, &sent) {
                            metrics::snapshot_sent(ticked_at.elapsed());
                        }
                        sent
                    }
                    Outgoing::TooSlow => Err(SocketEnd::Close(close::POLICY, "slow consumer".into())),
                },
                _ = ping.tick() => {
                    if heard_at.elapsed() > ping_every * 2 {
                        // A dead peer: there is no one to send a close frame to.
                        tracing::debug!("no frame from the peer in two ping intervals; dropping it");
                        Err(SocketEnd::Gone)
                    } else {
                        Box::pin(send_unless_closed(&mut socket, &mut close_order, &outbox, Message::Ping(Default::default()))).await
                    }
                }
                incoming = socket.recv() => {
                    heard_at = Instant::now();
                    let is_data = matches!(incoming, Some(Ok(Message::Text(_) | Message::Binary(_))));
                    if is_data && allowance.as_mut().is_some_and(|allowance| !allowance.take()) {
                        Err(SocketEnd::Close(close::POLICY, "message rate exceeded".into()))
                    } else {
                        match incoming {
                            // Boxed: handling a message (a room join waits on the room) is a
                            // large future, and inline it would sit in every idle socket's task.
                            Some(Ok(Message::Text(text))) => Box::pin(player.handle(&text)).await.map_err(player_end),
                            Some(Ok(Message::Binary(_))) => player.binary_frame().map_err(player_end),
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                            Some(Ok(Message::Close(_))) => Err(SocketEnd::PeerClosed),
                            Some(Err(error)) if is_too_big(&error) => Err(SocketEnd::Close(close::TOO_BIG, "message too big".into())),
                            Some(Err(_)) | None => Err(SocketEnd::Gone),
                        }
                    }
                }
            };
            if let Err(end) = outcome {
                break end;
            }
        };
        // Leaves its room at once, not after the close handshake.
        drop(player);
        // Boxed, like every path taken once: inline, its state would sit in every
        // idle socket's task.
        Box::pin(finish(socket, end)).await;
    }
}

/// Writes a frame, unless a close order arrives first: then the write is abandoned
/// (tungstenite keeps any part already buffered whole) and the close goes next. A
/// peer that stops reading would hold this write forever: the room's drops mark it
/// slow meanwhile, and a write stalled past [`WRITE_STALL_LIMIT`] is slow too.
async fn send_unless_closed(
    socket: &mut WebSocket,
    close_order: &mut oneshot::Receiver<CloseOrder>,
    outbox: &Outbox,
    message: Message,
) -> Result<(), SocketEnd> {
    tokio::select! {
        biased;
        order = close_order => Err(order.map_or(SocketEnd::Gone, SocketEnd::Ordered)),
        _ = outbox.too_slow() => Err(SocketEnd::Close(close::POLICY, "slow consumer".into())),
        sent = tokio::time::timeout(WRITE_STALL_LIMIT, socket.send(message)) => match sent {
            Ok(sent) => sent.map_err(|_| SocketEnd::Gone),
            Err(_) => Err(SocketEnd::Close(close::POLICY, "slow consumer".into())),
        },
    }
}

fn player_end(end: PlayerEnd) -> SocketEnd {
    match end {
        PlayerEnd::TooManyBadFrames => SocketEnd::Close(close::POLICY, "too many bad frames".into()),
    }
}

/// 1001's reason carries a jittered reconnect hint, so that the clients of a
/// restarting node do not all come back in the same instant.
fn shutdown_reason() -> Cow<'static, str> {
    let seconds: f32 = rand::random_range(1.0..5.0);
    format!("server shutting down: reconnect in {seconds:.1}s").into()
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
            write_close(&mut socket, code, &reason, Some(CLOSE_WRITE_PATIENCE)).await
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
    let written = matches!(sent, Some(Ok(())));
    if written {
        metrics::close_sent(code);
    } else {
        metrics::socket_aborted();
    }
    written
}

/// Reads (and ignores) until the peer answers the close or the linger ends, so the
/// connection ends with a FIN after our close frame, not a reset that could discard it.
async fn linger(mut socket: WebSocket) {
    // Let the peer's answer wait in the kernel a moment: in a mass revocation the
    // cores are better spent writing the other sockets' close frames first.
    tokio::time::sleep(LINGER_GRACE).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, F>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle socket holds this future. A large state inlined into the loop (a
    /// write, a close, a second copy of an argument) shows here before it shows in the
    /// memory benchmark. It was 3.5 KB before the writes and the ending were boxed;
    /// 880 bytes after.
    #[test]
    fn an_idle_sockets_state_stays_small() {
        let size = future_size(run);
        assert!(size <= 1024, "the socket task's future grew to {size} bytes");
    }
}
