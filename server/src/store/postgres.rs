//! The PostgreSQL backend, for production and for several nodes on one database.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        // Several nodes may start at once: sqlx serializes their migrations with an
        // advisory lock.
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }
}

/// The channel revocations are announced on; the payload is the event's seq.
pub const REVOCATION_CHANNEL: &str = "tether_revocations";

/// Serializes revocation writers for the rest of their transaction, so that seqs
/// commit in the order they were drawn and the log has no gap a reader could pass.
const LOCK_REVOCATION_LOG: &str = "SELECT pg_advisory_xact_lock(7460001)";
const ANNOUNCE: &str = "SELECT pg_notify('tether_revocations', $1::text)";

const DELETE_NODE_SOCKETS: &str = "DELETE FROM node_sockets WHERE node_id = $1";
const INSERT_NODE_SOCKETS: &str = "INSERT INTO node_sockets (node_id, session_id, sockets, seen_at) \
     SELECT $1, session_id, sockets, $4 FROM UNNEST($2::uuid[], $3::int[]) AS t(session_id, sockets)";
const OTHER_NODES_SOCKETS: &str =
    "SELECT session_id, node_id, sockets FROM node_sockets WHERE node_id <> $1 AND seen_at > $2";

super::queries::impl_store_over_pool!(
    PgStore,
    before_revocation: [LOCK_REVOCATION_LOG],
    announce_revocation: [ANNOUNCE],
    extra: {
        async fn record_node_sockets(
            &self,
            node_id: &str,
            counts: &[(uuid::Uuid, i32)],
            now: time::OffsetDateTime,
        ) -> anyhow::Result<()> {
            let (sessions, sockets): (Vec<uuid::Uuid>, Vec<i32>) = counts.iter().copied().unzip();
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

        async fn other_nodes_sockets(
            &self,
            node_id: &str,
            since: time::OffsetDateTime,
        ) -> anyhow::Result<Vec<(uuid::Uuid, String, i32)>> {
            Ok(sqlx::query_as(OTHER_NODES_SOCKETS).bind(node_id).bind(since).fetch_all(&self.pool).await?)
        }
    }
);
