//! What a node needs from the medium that links it to the other nodes: a wake-up when
//! one of them committed a revocation, and a place to publish its socket counts. The
//! revocation log itself lives in the store, so a wake-up that is lost costs only time
//! (the follower also polls), never a revocation.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

#[async_trait]
pub trait ClusterBus: Send + Sync + 'static {
    /// Wakes the other nodes: a revocation with this seq was committed.
    async fn announce(&self, seq: i64) -> anyhow::Result<()>;

    /// Starts listening for announcements (anyone's, this node's own included).
    async fn subscribe(&self) -> anyhow::Result<Box<dyn Announcements>>;

    /// Replaces this node's socket counts per session.
    async fn publish_presence(
        &self,
        node_id: &str,
        counts: &[(Uuid, i32)],
        now: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// Other nodes' socket counts published after `since`: (session, node, sockets).
    async fn presence_elsewhere(
        &self,
        node_id: &str,
        since: OffsetDateTime,
    ) -> anyhow::Result<Vec<(Uuid, String, i32)>>;
}

/// A live subscription.
#[async_trait]
pub trait Announcements: Send {
    /// Waits for the next announcement; an error means the subscription broke and
    /// announcements may have been missed since.
    async fn next(&mut self) -> anyhow::Result<()>;
}
