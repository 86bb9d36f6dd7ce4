//! A socket's bounded outbound queue, shared by the socket task and the room that
//! fans out to it. Frames are `Utf8Bytes` or `Bytes`, so one encoded snapshot is
//! handed to every member that gets it as the same bytes.
//!
//! It is a plain `VecDeque` behind a lock rather than a channel: an idle socket's
//! queue then holds no memory at all (a tokio channel allocates its first block of
//! 32 slots up front), and thousands of idle sockets are the common case.

use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tether_shared::ws::ServerMessage;
use tokio::sync::Notify;

/// One queued frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub payload: Payload,
    /// For a snapshot: when its tick began, so that the socket can tell how long
    /// the tick took to reach the wire. A newer snapshot replaces an unsent one.
    pub snapshot_of: Option<Instant>,
}

#[derive(Debug, Clone)]
pub enum Payload {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    pub fn into_message(self) -> Message {
        match self.payload {
            Payload::Text(text) => Message::Text(text),
            Payload::Binary(bytes) => Message::Binary(bytes),
        }
    }

    #[cfg(test)]
    pub fn text(&self) -> &str {
        match &self.payload {
            Payload::Text(text) => text.as_str(),
            Payload::Binary(_) => panic!("a binary frame"),
        }
    }
}

/// What the socket's task is to do next.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Frame),
    /// The consumer stayed too slow: close it.
    TooSlow,
}

pub struct Outbox {
    frames: Mutex<VecDeque<Frame>>,
    capacity: usize,
    /// Wakes the socket task when a frame is queued or the consumer is found slow.
    wake: Notify,
    /// Frames dropped because the queue was full since the socket last took one.
    consecutive_drops: AtomicU32,
    /// Past this many drops in a row the consumer counts as slow and is closed (1008).
    drop_limit: u32,
    /// Snapshots replaced unsent since one was last written. A queue that never
    /// moves is slow after as many replacements as frames it holds plus the drop
    /// limit: as long as a queue of unreplaced snapshots took to fill and overflow.
    replaced_in_a_row: AtomicU32,
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
            replaced_in_a_row: AtomicU32::new(0),
            slow: AtomicBool::new(false),
        }
    }

    fn frames(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        // Nothing panics while holding this lock; recover rather than poison the socket.
        self.frames.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame without waiting. A full queue drops it: a snapshot that could
    /// not be sent is superseded by the next one anyway, and a sender (the room's
    /// tick) is never held up by one slow reader.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_frame(Frame { payload: Payload::Text(frame), snapshot_of: None })
    }

    /// Queues a tick's snapshot. One still unsent is replaced in its place: the
    /// newer is complete by itself (a full view, or a delta from what the client
    /// acknowledged), so a reader a frame behind gets the freshest state, not a
    /// backlog; a reader that never takes one is still found slow.
    pub fn push_snapshot(&self, payload: Payload, ticked_at: Instant) -> bool {
        let frame = Frame { payload, snapshot_of: Some(ticked_at) };
        let mut frames = self.frames();
        if let Some(unsent) = frames.iter_mut().find(|queued| queued.snapshot_of.is_some()) {
            *unsent = frame;
            drop(frames);
            // Saturating: `--ws-slow-consumer-drops` may be as large as a u32 goes.
            let limit = (self.capacity as u32).saturating_add(self.drop_limit);
            if self.replaced_in_a_row.fetch_add(1, Ordering::Relaxed).saturating_add(1) > limit {
                self.slow.store(true, Ordering::Release);
                self.wake.notify_one();
            }
            return false;
        }
        drop(frames);
        self.push_frame(frame)
    }

    fn push_frame(&self, frame: Frame) -> bool {
        let mut frames = self.frames();
        if frames.len() >= self.capacity {
            drop(frames);
            self.count_drop();
            return false;
        }
        frames.push_back(frame);
        drop(frames);
        self.wake.notify_one();
        true
    }

    fn count_drop(&self) {
        if self.consecutive_drops.fetch_add(1, Ordering::Relaxed).saturating_add(1) > self.drop_limit {
            self.slow.store(true, Ordering::Release);
            self.wake.notify_one();
        }
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

    fn pop(&self) -> Option<Frame> {
        let mut frames = self.frames();
        let frame = frames.pop_front()?;
        // Progress, however slow: a burst (a hundred players joining one room at
        // once) may overflow a queue that is being written, and that reader is not slow.
        self.consecutive_drops.store(0, Ordering::Relaxed);
        if frame.snapshot_of.is_some() {
            self.replaced_in_a_row.store(0, Ordering::Relaxed);
        }
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
        assert!(outbox.push("c".into()), "a frame taken resets the count");
        for _ in 0..4 {
            outbox.push("dropped".into());
        }
        assert!(outbox.too_slow().now_or_never().is_some());
        assert!(matches!(outbox.next().await, Outgoing::TooSlow), "slow comes before what is queued");
    }

    fn frame_of(outgoing: Outgoing) -> String {
        match outgoing {
            Outgoing::Frame(frame) => frame.text().to_owned(),
            Outgoing::TooSlow => panic!("not slow"),
        }
    }

    /// A hundred players joining one room at once: more presence frames than the
    /// queue holds, while the socket writes. Drops, but no slow consumer.
    #[test]
    fn the_largest_drop_limit_does_not_overflow() {
        let outbox = Outbox::new(8, u32::MAX);
        for tick in 0..4 {
            outbox.push_snapshot(Payload::Text(format!("tick {tick}").into()), Instant::now());
        }
        assert!(!outbox.slow.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_burst_into_a_queue_that_is_being_written_is_not_a_slow_consumer() {
        let outbox = Outbox::new(4, 3);
        for n in 0..100 {
            outbox.push(format!("presence {n}").into());
            if n % 3 == 0 {
                frame_of(outbox.next().await);
            }
        }
        assert!(!outbox.slow.load(Ordering::Acquire));
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

    #[tokio::test]
    async fn a_newer_snapshot_replaces_an_unsent_one_in_its_place_and_a_reader_that_never_catches_up_is_slow()
    {
        let outbox = Outbox::new(8, 3);
        let snapshot = |tick: &str| Payload::Text(tick.to_owned().into());
        assert!(outbox.push("pong".into()));
        assert!(outbox.push_snapshot(snapshot("tick 1"), Instant::now()));
        assert!(outbox.push("chat".into()));
        assert!(!outbox.push_snapshot(snapshot("tick 2"), Instant::now()), "replaced, not queued");
        let order: Vec<String> = [outbox.next().await, outbox.next().await, outbox.next().await]
            .into_iter()
            .map(frame_of)
            .collect();
        assert_eq!(order, ["pong", "tick 2", "chat"]);
        assert!(outbox.push_snapshot(snapshot("tick 3"), Instant::now()));
        for tick in 4..15 {
            outbox.push_snapshot(snapshot(&format!("tick {tick}")), Instant::now());
        }
        assert!(
            !outbox.slow.load(Ordering::Acquire),
            "11 replacements: as many as 8 queued frames and 3 drops"
        );
        outbox.push_snapshot(snapshot("tick 15"), Instant::now());
        assert!(matches!(outbox.next().await, Outgoing::TooSlow));
    }
}
