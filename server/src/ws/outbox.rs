//! A socket's bounded outbound queue, shared by the socket task and the room that
//! fans out to it. Frames are `Utf8Bytes`, so one serialized snapshot is handed to
//! every member as the same bytes.

use axum::extract::ws::Utf8Bytes;
use std::sync::atomic::{AtomicU32, Ordering};
use tether_shared::ws::ServerMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct Outbox {
    frames: mpsc::Sender<Utf8Bytes>,
    /// Frames dropped in a row because the queue was full; reset by any frame that fits.
    consecutive_drops: AtomicU32,
    /// Past this many drops in a row the consumer counts as slow and is closed (1008).
    drop_limit: u32,
    slow: CancellationToken,
}

impl Outbox {
    pub fn new(capacity: usize, drop_limit: u32) -> (Outbox, mpsc::Receiver<Utf8Bytes>) {
        let (frames, queued) = mpsc::channel(capacity.max(2));
        let outbox = Outbox {
            frames,
            consecutive_drops: AtomicU32::new(0),
            drop_limit,
            slow: CancellationToken::new(),
        };
        (outbox, queued)
    }

    /// Queues a frame without waiting. A full queue drops it: a snapshot that could
    /// not be sent is superseded by the next one anyway, and a sender (the room's
    /// tick) is never held up by one slow reader.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        match self.frames.try_send(frame) {
            Ok(()) => {
                self.consecutive_drops.store(0, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.consecutive_drops.fetch_add(1, Ordering::Relaxed) + 1 > self.drop_limit {
                    self.slow.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn push_message(&self, message: &ServerMessage) -> bool {
        self.push(frame(message))
    }

    /// Completes once the consumer has stayed too slow.
    pub async fn too_slow(&self) {
        self.slow.cancelled().await
    }
}

/// A server message serialized once, ready to be queued to any number of sockets.
pub fn frame(message: &ServerMessage) -> Utf8Bytes {
    serde_json::to_string(message).expect("server messages always serialize").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_consumer_that_stays_behind_is_declared_slow() {
        let (outbox, mut queued) = Outbox::new(2, 3);
        assert!(outbox.push("a".into()) && outbox.push("b".into()));
        for _ in 0..3 {
            assert!(!outbox.push("dropped".into()));
        }
        assert!(!outbox.slow.is_cancelled(), "within the allowance");
        assert_eq!(queued.recv().await.unwrap().as_str(), "a");
        assert!(outbox.push("c".into()), "a frame that fits resets the count");
        for _ in 0..4 {
            outbox.push("dropped".into());
        }
        assert!(outbox.slow.is_cancelled());
    }
}
