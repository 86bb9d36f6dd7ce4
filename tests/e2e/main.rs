//! End-to-end tests: each starts real servers on port 0 with a fresh database and
//! talks to them over real HTTP and WebSocket connections.

/// One conformance test, run on SQLite always and on PostgreSQL when
/// `TETHER_TEST_DATABASE_URL` is set: a module named after the test with two test
/// functions, `sqlite` and `postgres`. The body gets `db`, an `Arc<TestDb>`.
macro_rules! on_both_backends {
    (async fn $name:ident($db:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($db: std::sync::Arc<tether_e2e::TestDb>) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(tether_e2e::TestDb::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = tether_e2e::TestDb::postgres(concat!(module_path!(), "::postgres")).await {
                    run(db).await;
                }
            }
        }
    };
}

mod account;
mod admin;
mod artillery;
mod auth;
mod browser;
mod cli;
mod cluster;
mod feed;
mod game;
mod history;
mod hostile;
mod keys;
mod limits;
mod persistence;
mod pg_tls;
mod refresh;
mod revocation;
mod revocation_edges;
mod services;
mod sockets;
mod store;
mod tokens;
