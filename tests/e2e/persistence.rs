//! What survives a restart, on SQLite and on PostgreSQL, and the same core flow on
//! both backends.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tether_e2e::*;

/// Revoked sessions stay revoked and live ones stay valid across a restart.
async fn restart_keeps_revocations_and_live_sessions(db: Arc<TestDb>) {
    let app = spawn_with(db.clone(), |_| {}).await;
    let admin = app.new_admin().await;
    let kept = app.new_player().await;
    let logged_out = app.new_player().await;
    let revoked = app.new_player().await;
    let banned = app.new_player().await;
    let ban = format!("/api/admin/users/{}/ban", banned.user_id);
    assert_eq!(app.post_auth(&ban, &admin.access_token, Some(json!({"reason": "bot"}))).await.status(), 200);
    assert_eq!(app.post_auth("/api/auth/logout", &logged_out.access_token, None).await.status(), 204);
    let path = format!("/api/admin/sessions/{}/revoke", revoked.session_id);
    let answer = app.post_auth(&path, &admin.access_token, Some(json!({"reason": "cheating"}))).await;
    assert_eq!(answer.status(), 200);
    let mut open = app.connect_ws(&kept.access_token).await;
    app.stop().await;
    let closed = open.next_close().await;
    assert_eq!(closed.code, 1001);
    assert!(closed.reason.starts_with("server shutting down: reconnect in "), "{}", closed.reason);

    let app = spawn_with(db, |_| {}).await;
    assert_eq!(app.get_me(&kept.access_token).await.status(), 200);
    let _socket = app.connect_ws(&kept.access_token).await;
    assert_eq!(app.refresh(&kept.refresh_token).await.status(), 200);
    for player in [&logged_out, &revoked] {
        expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
        expect_error(app.refresh(&player.refresh_token).await, 401, "session_revoked").await;
    }
    let login =
        app.post_json("/api/auth/login", json!({"username": banned.username, "password": PASSWORD})).await;
    let refused = expect_error(login, 403, "banned").await;
    assert_eq!(refused["reason"], "bot");
    expect_error(app.refresh(&banned.refresh_token).await, 403, "banned").await;
    let auth = format!("Bearer {}", banned.access_token);
    let mut refused = app.ws_with(&[("authorization", &auth)], "").await;
    assert_eq!(refused.next_close().await, Closed { code: 4003, reason: "banned: bot".into() });
    let auth = format!("Bearer {}", revoked.access_token);
    let mut refused = app.ws_with(&[("authorization", &auth)], "").await;
    let closed = refused.next_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: cheating"));
    app.stop().await;
}

#[tokio::test]
async fn sqlite_restart_keeps_revocations_and_live_sessions() {
    restart_keeps_revocations_and_live_sessions(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_restart_keeps_revocations_and_live_sessions() {
    let Some(db) = TestDb::postgres("postgres_restart_keeps_revocations_and_live_sessions").await else {
        return;
    };
    restart_keeps_revocations_and_live_sessions(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_serves_the_core_flow() {
    let Some(db) = TestDb::postgres("postgres_serves_the_core_flow").await else { return };
    assert!(db.is_postgres());
    let app = spawn_with(db, |_| {}).await;
    let name = unique_name("Pg");
    assert_eq!(app.register(&name).await.status(), 201);
    expect_error(app.register(&name.to_lowercase()).await, 409, "username_taken").await;
    let player = app.login(&name).await;
    let mut socket = app.connect_ws(&player.access_token).await;
    socket.send_json(json!({"type": "ping", "t": 1.25})).await;
    assert_eq!(socket.next_text().await, r#"{"type":"pong","t":1.25}"#);

    let rotated: Value = app.refresh(&player.refresh_token).await.json().await.unwrap();
    let attempts = (0..6).map(|_| app.refresh(rotated["refresh_token"].as_str().unwrap()));
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");

    // One of the losers presented a rotated token: the whole session is gone.
    let closed = socket.next_close_within(Duration::from_secs(2)).await;
    assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: refresh token reuse"));
    expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;

    let fresh = app.login(&name).await;
    let mut socket = app.connect_ws(&fresh.access_token).await;
    let response = app.post_auth("/api/auth/logout-all", &fresh.access_token, None).await;
    assert_eq!(response.status(), 204);
    assert_eq!(socket.next_close_within(Duration::from_secs(1)).await.code, 4001);
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
}
