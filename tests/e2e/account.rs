//! A player's own sessions, and the admin's revoke of one session.

use serde_json::{Value, json};
use std::time::Duration;
use tether_e2e::*;

on_both_backends! {
    async fn a_player_lists_own_sessions_with_socket_counts_and_the_current_one_marked(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let second = app.login(&player.username).await;
        let _stranger = app.new_player().await;
        let _socket_a = app.connect_ws(&second.access_token).await;
        let _socket_b = app.connect_ws(&second.access_token).await;

        let response = app.get_auth("/api/sessions", &player.access_token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let sessions = body["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 2, "{body}");
        let find = |id: &str| sessions.iter().find(|s| s["id"] == id).unwrap().clone();
        let current = find(&player.session_id);
        let other = find(&second.session_id);
        assert_eq!((current["current"].as_bool(), current["sockets"].as_u64()), (Some(true), Some(0)));
        assert_eq!((other["current"].as_bool(), other["sockets"].as_u64()), (Some(false), Some(2)));
        assert_eq!(other["ip"], "127.0.0.1");
        for field in ["created_at", "last_seen_at", "user_agent"] {
            assert!(other.get(field).is_some(), "{field} missing: {other}");
        }
    }
}

on_both_backends! {
    async fn deleting_an_own_session_closes_its_sockets_before_answering(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let phone = app.login(&player.username).await;
        let mut socket = app.connect_ws(&phone.access_token).await;

        let path = format!("/api/sessions/{}", phone.session_id);
        let response = app.http.delete(app.url(&path)).bearer_auth(&player.access_token).send().await.unwrap();
        assert_eq!(response.status(), 204);
        let closed = socket.next_close_within(Duration::from_secs(1)).await;
        assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: session deleted"));
        expect_error(app.get_me(&phone.access_token).await, 401, "session_revoked").await;
        assert_eq!(app.get_me(&player.access_token).await.status(), 200);
        let sessions: Value = app.get_auth("/api/sessions", &player.access_token).await.json().await.unwrap();
        assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1, "a revoked session is no longer listed");
    }
}

on_both_backends! {
    async fn a_player_cannot_delete_someone_elses_session(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let victim = app.new_player().await;
        for id in [victim.session_id.clone(), uuid::Uuid::new_v4().to_string()] {
            let response = app
                .http
                .delete(app.url(&format!("/api/sessions/{id}")))
                .bearer_auth(&player.access_token)
                .send()
                .await
                .unwrap();
            expect_error(response, 404, "not_found").await;
        }
        assert_eq!(app.get_me(&victim.access_token).await.status(), 200);
    }
}

on_both_backends! {
    async fn an_admin_revoke_closes_every_socket_of_the_session_before_it_answers(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let mut sockets = Vec::new();
        for _ in 0..5 {
            sockets.push(app.connect_ws(&player.access_token).await);
        }
        let path = format!("/api/admin/sessions/{}/revoke", player.session_id);
        let response = app.post_auth(&path, &admin.access_token, Some(json!({"reason": "cheating"}))).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"sessions_revoked": 1, "sockets_closed": 5}));
        for socket in &mut sockets {
            let closed = socket.next_close_within(Duration::from_secs(1)).await;
            assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: cheating"));
        }
        expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;

        let again = app.post_auth(&path, &admin.access_token, Some(json!({"reason": "again"}))).await;
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again, json!({"sessions_revoked": 0, "sockets_closed": 0}), "already revoked: zero counts");
    }
}

on_both_backends! {
    async fn admin_routes_refuse_players_and_anonymous_callers_and_unknown_ids(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let path = format!("/api/admin/sessions/{}/revoke", player.session_id);
        expect_error(app.post_auth(&path, &player.access_token, Some(json!({}))).await, 403, "forbidden").await;
        expect_error(app.post_json(&path, json!({})).await, 401, "invalid_token").await;
        let unknown = format!("/api/admin/sessions/{}/revoke", uuid::Uuid::new_v4());
        expect_error(app.post_auth(&unknown, &admin.access_token, Some(json!({}))).await, 404, "not_found").await;
        assert_eq!(app.get_me(&player.access_token).await.status(), 200);
    }
}
