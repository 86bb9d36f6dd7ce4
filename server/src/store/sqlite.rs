//! The embedded SQLite backend: one file, created when missing, WAL journal.

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // SQLite takes one writer at a time; a few connections serve the readers.
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

// One writer at a time already orders the revocation log, and there is no other
// node to tell.
super::queries::impl_store_over_pool!(
    SqliteStore,
    before_revocation: [] as [&'static str; 0],
    announce_revocation: [] as [&'static str; 0],
    extra: {
        async fn record_node_sockets(
            &self,
            _node_id: &str,
            _counts: &[(uuid::Uuid, i32)],
            _now: time::OffsetDateTime,
        ) -> anyhow::Result<()> {
            Ok(())
        }

        async fn other_nodes_sockets(
            &self,
            _node_id: &str,
            _since: time::OffsetDateTime,
        ) -> anyhow::Result<Vec<(uuid::Uuid, String, i32)>> {
            Ok(Vec::new())
        }
    }
);
