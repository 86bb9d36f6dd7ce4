//! PostgreSQL over TLS: `sslmode` and `sslrootcert` in the database URL are honoured
//! (sqlx with rustls on ring). `.ci/pg-tls` gives the local server a certificate from
//! a CA of its own and names that CA (and an unrelated one) in the environment.

use sqlx::Connection as _;
use tether_e2e::*;

/// The URL with `params` added to its query.
fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

fn root_certs() -> Option<(String, String)> {
    let (Ok(root), Ok(wrong)) =
        (std::env::var("TETHER_TEST_PG_SSLROOTCERT"), std::env::var("TETHER_TEST_PG_WRONG_SSLROOTCERT"))
    else {
        assert!(std::env::var_os("CI").is_none(), "CI must run .ci/pg-tls: the TLS test is required there");
        eprintln!("skipped: TETHER_TEST_PG_SSLROOTCERT is not set (run .ci/pg-tls)");
        return None;
    };
    Some((root, wrong))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_postgres_over_verified_tls_and_a_wrong_root_is_refused() {
    let Some((root, wrong)) = root_certs() else { return };
    let Some(db) = TestDb::postgres("pg_tls").await else { return };
    let verified = with_params(&db.url, &format!("sslmode=verify-full&sslrootcert={root}"));

    let mut connection = tokio::time::timeout(WAIT, sqlx::PgConnection::connect(&verified))
        .await
        .expect("connects in time")
        .expect("verify-full with the right root connects");
    let (ssl,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    connection.close().await.unwrap();

    let refused = tokio::time::timeout(
        WAIT,
        sqlx::PgConnection::connect(&with_params(
            &db.url,
            &format!("sslmode=verify-full&sslrootcert={wrong}"),
        )),
    )
    .await
    .expect("answers in time");
    let error = match refused {
        Ok(_) => panic!("a certificate from another root is refused"),
        Err(error) => error.to_string(),
    };
    assert!(error.to_lowercase().contains("certificate") || error.contains("tls"), "{error}");

    // The whole server on that URL: migrations, the cluster listener, a login.
    let url = verified.clone();
    let app = spawn_with(db, move |config| config.database_url = url).await;
    let player = app.new_player().await;
    assert_eq!(app.get_me(&player.access_token).await.status(), 200);
}
