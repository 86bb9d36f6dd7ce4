//! The revocation feed other services follow: the revocation log, read from the store
//! in (seq, session) order, as far as this node has applied it.
//!
//! A cursor is a place in that order, so the same cursor means the same place on
//! every node, and resuming with the last event's id on any node sends each later
//! session once. Each stream reads the log itself, one page at a time, and hands
//! events to a small bounded queue: a consumer that stops reading for
//! `--revocation-stream-stall` is cut off (its stream ends, and the log says so) instead of being
//! buffered for.

use crate::app::AppState;
use crate::services::ServiceCaller;
use crate::store::{LogCursor, LoggedRevocation};
use std::time::Duration;
use tether_shared::api::RevokedSession;
use tether_shared::{SessionId, UserId};
use uuid::Uuid;

/// Events a stream reads from the store at a time.
const PAGE: i64 = 500;
/// Events queued for one consumer beyond what its connection holds.
pub const QUEUE: usize = 256;
/// How often a stream looks again while this node is stale.
const STALE_RECHECK: Duration = Duration::from_secs(1);

/// How far this node has applied the revocation log: streams send nothing beyond it.
pub struct FeedHead(tokio::sync::watch::Sender<i64>);

impl FeedHead {
    pub fn starting_at(seq: i64) -> FeedHead {
        FeedHead(tokio::sync::watch::channel(seq).0)
    }

    /// Called once this node has applied every event up to `seq`.
    pub fn advance(&self, seq: i64) {
        self.0.send_if_modified(|head| {
            let moved = seq > *head;
            *head = (*head).max(seq);
            moved
        });
    }

    pub fn get(&self) -> i64 {
        *self.0.borrow()
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.0.subscribe()
    }
}

/// `<seq>-<session id as 32 hex digits>`: URL-safe, and opaque to consumers.
pub fn encode_cursor(cursor: LogCursor) -> String {
    format!("{}-{}", cursor.seq, cursor.session.simple())
}

pub fn decode_cursor(text: &str) -> Option<LogCursor> {
    let (seq, session) = text.split_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || session.len() != 32 {
        return None;
    }
    let seq: i64 = seq.parse().ok()?;
    let session = Uuid::try_parse(session).ok()?;
    Some(LogCursor { seq, session })
}

pub fn event_of(logged: &LoggedRevocation) -> RevokedSession {
    let session = &logged.session;
    RevokedSession {
        sid: SessionId(session.id),
        sub: UserId(session.user_id),
        kind: session.revoke_kind.clone().unwrap_or_else(|| "admin_revoke".to_owned()),
        at: session.revoked_at.unwrap_or(session.created_at),
        session_expires_at: session.expires_at,
    }
}

/// What a stream hands to the connection.
pub enum FeedItem {
    Revoked {
        cursor: String,
        event: RevokedSession,
    },
    /// The cursor is older than the log (or was never given): read the snapshot again.
    Reset,
}

/// Where a stream starts.
pub enum Start {
    After(LogCursor),
    /// The log cannot resume from the cursor given.
    Reset,
}

/// After `cursor`, or from this node's head when there is none.
pub async fn starting_point(state: &AppState, cursor: Option<LogCursor>) -> anyhow::Result<Start> {
    let Some(cursor) = cursor else { return Ok(Start::After(LogCursor::after_event(state.feed.get()))) };
    let (pruned_through, head) = state.store.revocation_log_bounds().await?;
    Ok(if cursor.seq < pruned_through || cursor.seq > head { Start::Reset } else { Start::After(cursor) })
}

/// Feeds one consumer until it hangs up, falls behind, loses its credential, or the
/// server stops.
pub async fn produce(
    state: AppState,
    caller: ServiceCaller,
    mut cursor: LogCursor,
    queue: tokio::sync::mpsc::Sender<FeedItem>,
) {
    let mut head = state.feed.subscribe();
    let mut revoked = state.services.revocations();
    loop {
        if !state.services.is_live(&caller.client_id) {
            tracing::info!(service = %caller.name, "service credential revoked; its revocation stream ends");
            return;
        }
        // A stale node cannot vouch for what it has: keep-alive comments only.
        let stale = state.log.is_stale();
        if !stale {
            let up_to = *head.borrow_and_update();
            match send_through(&state, &caller, &mut cursor, up_to, &queue).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "cannot read the revocation log for a stream"
                    );
                }
            }
        }
        let recheck = async {
            if stale { tokio::time::sleep(STALE_RECHECK).await } else { std::future::pending().await }
        };
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = queue.closed() => return,
            changed = head.changed() => if changed.is_err() { return },
            _ = revoked.changed() => {}
            _ = recheck => {}
        }
    }
}

/// Sends every session after `cursor` up to event `up_to`; false when the stream
/// must end (consumer gone or cut off).
async fn send_through(
    state: &AppState,
    caller: &ServiceCaller,
    cursor: &mut LogCursor,
    up_to: i64,
    queue: &tokio::sync::mpsc::Sender<FeedItem>,
) -> anyhow::Result<bool> {
    if *cursor == LogCursor::after_event(up_to) || cursor.seq > up_to {
        return Ok(true);
    }
    loop {
        let page = state.store.sessions_revoked_in_log(*cursor, up_to, PAGE).await?;
        for logged in &page {
            let at = LogCursor { seq: logged.revocation_seq, session: logged.session.id };
            let item = FeedItem::Revoked { cursor: encode_cursor(at), event: event_of(logged) };
            match tokio::time::timeout(state.config.revocation_stream_stall, queue.send(item)).await {
                Ok(Ok(())) => *cursor = at,
                Ok(Err(_)) => return Ok(false),
                Err(_) => {
                    tracing::warn!(
                        service = %caller.name,
                        behind = up_to - cursor.seq,
                        "revocation stream consumer too slow; cut off"
                    );
                    crate::telemetry::metrics::feed_consumer_cut_off();
                    return Ok(false);
                }
            }
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    // No floor check here: pruning drops log events, never the session rows a stream
    // reads, so a reader that fell behind a prune still gets every session once.
    *cursor = LogCursor::after_event(up_to);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_does_not_parse() {
        let cursor = LogCursor { seq: 42, session: Uuid::new_v4() };
        assert_eq!(decode_cursor(&encode_cursor(cursor)), Some(cursor));
        let end = LogCursor::after_event(7);
        assert_eq!(decode_cursor(&encode_cursor(end)), Some(end));
        for bad in [
            "",
            "7",
            "-1-ffffffffffffffffffffffffffffffff",
            "x-ffffffffffffffffffffffffffffffff",
            "7-fff",
            "7-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "99999999999999999999-ffffffffffffffffffffffffffffffff",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_head_only_moves_forward_and_wakes_only_when_it_does() {
        let head = FeedHead::starting_at(5);
        let mut watching = head.subscribe();
        head.advance(3);
        assert!(!watching.has_changed().unwrap());
        head.advance(9);
        assert!(watching.has_changed().unwrap());
        assert_eq!(*watching.borrow_and_update(), 9);
    }
}
