//! A revocation whose commit fails: refused at once on the node that was asked, and
//! committed by the caller's retry, so that it also holds after a restart.

use std::sync::Arc;
use tether_e2e::*;

/// Makes the database refuse (or accept again) every revocation, with a trigger: a real
/// failure of the real database, inside the revoking transaction.
async fn refuse_revocations(db: &TestDb, refuse: bool) {
    let statements: &[&str] = match (db.is_postgres(), refuse) {
        (true, true) => &[
            "CREATE FUNCTION refuse_revocations() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected: revocations refused'; END $$",
            "CREATE TRIGGER refuse_revocations BEFORE UPDATE OF revoked_at ON sessions \
             FOR EACH ROW EXECUTE FUNCTION refuse_revocations()",
        ],
        (true, false) => &["DROP TRIGGER refuse_revocations ON sessions"],
        (false, true) => &["CREATE TRIGGER refuse_revocations BEFORE UPDATE OF revoked_at ON sessions \
             BEGIN SELECT RAISE(ABORT, 'injected: revocations refused'); END"],
        (false, false) => &["DROP TRIGGER refuse_revocations"],
    };
    if db.is_postgres() {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("connect to the test database");
        for statement in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*statement)).execute(&pool).await.expect("inject the fault");
        }
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("open the test database");
        for statement in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*statement)).execute(&pool).await.expect("inject the fault");
        }
        pool.close().await;
    }
}

async fn logout_whose_commit_fails_is_refused_here_and_its_retry_commits_it(db: Arc<TestDb>) {
    let app = spawn_with(db.clone(), |_| {}).await;
    let player = app.new_player().await;
    let bystander = app.new_player().await;
    let mut socket = app.connect_ws(&player.access_token).await;
    refuse_revocations(&db, true).await;

    let answer = app.post_auth("/api/auth/logout", &player.access_token, None).await;
    assert_eq!(answer.status(), 500, "an uncommitted revocation is not acknowledged");
    let closed = socket.next_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: logout"), "closed before the answer");
    expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
    let auth = format!("Bearer {}", player.access_token);
    assert_eq!(app.ws_with(&[("authorization", &auth)], "").await.next_close().await.code, 4001);
    assert_eq!(app.get_me(&bystander.access_token).await.status(), 200);

    refuse_revocations(&db, false).await;
    let retry = app.post_auth("/api/auth/logout", &player.access_token, None).await;
    assert_eq!(retry.status(), 204, "the retry of the same call is let through to commit it");
    let again = app.post_auth("/api/auth/logout", &player.access_token, None).await;
    expect_error(again, 401, "session_revoked").await;
    app.stop().await;

    let app = spawn_with(db, |_| {}).await;
    expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
    expect_error(app.refresh(&player.refresh_token).await, 401, "session_revoked").await;
    assert_eq!(app.get_me(&bystander.access_token).await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_logout_whose_commit_fails_is_refused_here_and_its_retry_commits_it() {
    logout_whose_commit_fails_is_refused_here_and_its_retry_commits_it(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logout_whose_commit_fails_is_refused_here_and_its_retry_commits_it() {
    let test = "postgres_logout_whose_commit_fails_is_refused_here_and_its_retry_commits_it";
    let Some(db) = TestDb::postgres(test).await else { return };
    logout_whose_commit_fails_is_refused_here_and_its_retry_commits_it(db).await;
}
