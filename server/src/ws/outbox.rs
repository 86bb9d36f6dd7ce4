//! A socket's bounded outbound queue, shared by the socket task and the room that
//! fans out to it. Frames are `Utf8Bytes`, so one serialized snapshot is handed to
//! every member as the same bytes.
//!
//! It is a plain `VecDeque` behind a lock rather than a channel: an idle socket's
//! queue then holds no memory at all (a tokio channel allocates its first block of
//! 32 slots up front), and thousands of idle sockets are the common case.

use axum::extract::ws::Utf8Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use tether_shared::ws::ServerMessage;
use tokio::sync::Notify;

/// What the socket's task is to do next.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Utf8Bytes),
    /// The consumer stayed too slow: close it.
    TooSlow,
}

pub struct Outbox {
    frames: Mutex<VecDeque<Utf8Bytes>>,
    capacity: usize,
    /// Wakes the socket task when a frame is queued or the consumer is found slow.
    wake: Notify,
    /// Frames dropped in a row because the queue was full; reset by any frame that fits.
    consecutive_drops: AtomicU32,
    /// Past this many drops in a row the consumer counts as slow and is closed (1008).
    drop_limit: u32,
    slow: AtomicBool,
}

impl Outbox {
    pub fn new(capacity: usize, drop_limit: u32) -> Outbox {
        Outbox {
            frames: Mutex::new(VecDeque::new()),
            capacity: capacity.max(2),
            wake: Notify::new(),
            consecutive_drops: AtomicU32::new(0),
            drop_limit,
            slow: AtomicBool::new(false),
        }
    }

    fn frames(&self) -> MutexGuard<'_, VecDeque<Utf8Bytes>> {
        // Nothing panics while holding this lock; recover rather than poison the socket.
        self.frames.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame without waiting. A full queue drops it: a snapshot that could
    /// not be sent is superseded by the next one anyway, and a sender (the room's
    /// tick) is never held up by one slow reader.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        let mut frames = self.frames();
        if frames.len() >= self.capacity {
            drop(frames);
            if self.consecutive_drops.fetch_add(1, Ordering::Relaxed) + 1 > self.drop_limit {
                self.slow.store(true, Ordering::Release);
                self.wake.notify_one();
            }
            return false;
        }
        frames.push_back(frame);
        drop(frames);
        self.consecutive_drops.store(0, Ordering::Relaxed);
        self.wake.notify_one();
        true
    }

    pub fn push_message(&self, message: &ServerMessage) -> bool {
        self.push(frame(message))
    }

    /// The next queued frame, or word that the consumer has stayed too slow, waiting
    /// for either. Cancel-safe: a frame stays queued until it is returned.
    ///
    /// One future for both, so that the socket's task has a single waiter on `wake`:
    /// with two, `notify_one` could wake the one with nothing to do and leave the
    /// frame queued until the next push (the frames then went out in pairs).
    pub async fn next(&self) -> Outgoing {
        loop {
            if self.slow.load(Ordering::Acquire) {
                return Outgoing::TooSlow;
            }
            if let Some(frame) = self.pop() {
                return Outgoing::Frame(frame);
            }
            // A notification sent before this wait is kept as a permit, so none is lost.
            self.wake.notified().await;
        }
    }

    fn pop(&self) -> Option<Utf8Bytes> {
        let mut frames = self.frames();
        let frame = frames.pop_front()?;
        if frames.is_empty() && frames.capacity() > 0 {
            // Most sockets are idle most of the time: an empty queue holds no memory
            // (refilling it is one allocation, next to a syscall).
            *frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Completes once the consumer has stayed too slow.
    pub async fn too_slow(&self) {
        while !self.slow.load(Ordering::Acquire) {
            self.wake.notified().await;
        }
    }
}

/// A server message serialized once, ready to be queued to any number of sockets.
pub fn frame(message: &ServerMessage) -> Utf8Bytes {
    serde_json::to_string(message).expect("server messages always serialize").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    #[tokio::test]
    async fn a_consumer_that_stays_behind_is_declared_slow() {
        let outbox = Outbox::new(2, 3);
        assert!(outbox.push("a".into()) && outbox.push("b".into()));
        for _ in 0..3 {
            assert!(!outbox.push("dropped".into()));
        }
        assert!(!outbox.slow.load(Ordering::Acquire), "within the allowance");
        assert_eq!(frame_of(outbox.next().await), "a");
        assert!(outbox.push("c".into()), "a frame that fits resets the count");
        for _ in 0..4 {
            outbox.push("dropped".into());
        }
        assert!(outbox.too_slow().now_or_never().is_some());
        assert!(matches!(outbox.next().await, Outgoing::TooSlow), "slow comes before what is queued");
    }

    fn frame_of(outgoing: Outgoing) -> String {
        match outgoing {
            Outgoing::Frame(frame) => frame.as_str().to_owned(),
            Outgoing::TooSlow => panic!("not slow"),
        }
    }

    #[tokio::test]
    async fn a_frame_pushed_while_the_socket_waits_is_taken_without_another_push() {
        let outbox = Outbox::new(8, 8);
        let mut next = std::pin::pin!(outbox.next());
        assert!(futures_util::poll!(next.as_mut()).is_pending(), "empty: waits");
        outbox.push("tick 1".into());
        match futures_util::poll!(next.as_mut()) {
            std::task::Poll::Ready(outgoing) => assert_eq!(frame_of(outgoing), "tick 1"),
            std::task::Poll::Pending => panic!("the frame waited for another push"),
        }
    }
}
