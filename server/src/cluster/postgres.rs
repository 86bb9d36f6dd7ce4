//! The cluster bus over the nodes' shared PostgreSQL: `NOTIFY` wakes the followers, a
//! table holds each node's socket counts.

use super::bus::{Announcements, ClusterBus};
use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
use uuid::Uuid;

/// The channel revocations are announced on; the payload is the event's seq.
const CHANNEL: &str = "tether_revocations";
const ANNOUNCE: &str = "SELECT pg_notify('tether_revocations', $1::text)";
const DELETE_NODE_SOCKETS: &str = "DELETE FROM node_sockets WHERE node_id = $1";
const INSERT_NODE_SOCKETS: &str = "INSERT INTO node_sockets (node_id, session_id, sockets, seen_at) \
     SELECT $1, session_id, sockets, $4 FROM UNNEST($2::uuid[], $3::int[]) AS t(session_id, sockets)";
const OTHER_NODES_SOCKETS: &str =
    "SELECT session_id, node_id, sockets FROM node_sockets WHERE node_id <> $1 AND seen_at > $2";

pub struct PgBus {
    pool: PgPool,
    /// The database URL naming this node's listener connection (`application_name`),
    /// so that an operator, or a test, can find its backend in `pg_stat_activity`.
    listener_url: String,
}

impl PgBus {
    pub fn new(pool: PgPool, database_url: &str, node_id: &str) -> PgBus {
        PgBus { pool, listener_url: listener_url(database_url, node_id) }
    }
}

#[async_trait]
impl ClusterBus for PgBus {
    async fn announce(&self, seq: i64) -> anyhow::Result<()> {
        sqlx::query(ANNOUNCE).bind(seq.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    async fn subscribe(&self) -> anyhow::Result<Box<dyn Announcements>> {
        let mut listener = PgListener::connect(&self.listener_url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Box::new(PgAnnouncements(listener)))
    }

    async fn publish_presence(
        &self,
        node_id: &str,
        counts: &[(Uuid, i32)],
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let (sessions, sockets): (Vec<Uuid>, Vec<i32>) = counts.iter().copied().unzip();
        let mut tx = self.pool.begin().await?;
        sqlx::query(DELETE_NODE_SOCKETS).bind(node_id).execute(&mut *tx).await?;
        if !sessions.is_empty() {
            sqlx::query(INSERT_NODE_SOCKETS)
                .bind(node_id)
                .bind(&sessions)
                .bind(&sockets)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn presence_elsewhere(
        &self,
        node_id: &str,
        since: OffsetDateTime,
    ) -> anyhow::Result<Vec<(Uuid, String, i32)>> {
        Ok(sqlx::query_as(OTHER_NODES_SOCKETS).bind(node_id).bind(since).fetch_all(&self.pool).await?)
    }
}

struct PgAnnouncements(PgListener);

#[async_trait]
impl Announcements for PgAnnouncements {
    async fn next(&mut self) -> anyhow::Result<()> {
        // `try_recv` answers None when the connection dropped (it reconnects on the
        // next call, but what was sent meanwhile is lost): report it as a break.
        match self.0.try_recv().await? {
            Some(_) => Ok(()),
            None => anyhow::bail!("the listener's connection was lost"),
        }
    }
}

fn listener_url(database_url: &str, node_id: &str) -> String {
    let separator = if database_url.contains('?') { '&' } else { '?' };
    let name: String =
        node_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    format!("{database_url}{separator}application_name=tether-listener-{name}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listener_names_itself_after_the_node() {
        assert_eq!(
            super::listener_url("postgres://u@h/db", "node-a"),
            "postgres://u@h/db?application_name=tether-listener-node-a"
        );
        assert_eq!(
            super::listener_url("postgres://u@h/db?sslmode=disable", "b c"),
            "postgres://u@h/db?sslmode=disable&application_name=tether-listener-bc"
        );
    }
}
