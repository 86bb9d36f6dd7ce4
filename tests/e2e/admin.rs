//! Operators: list sessions, kick, ban and unban, revoke all, the audit trail, and
//! the single-session policy.

use serde_json::{Value, json};
use std::time::Duration;
use tether_e2e::*;

async fn login_status(app: &TestApp, username: &str) -> reqwest::Response {
    app.post_json("/api/auth/login", json!({"username": username, "password": PASSWORD})).await
}

on_both_backends! {
    async fn a_kick_closes_every_socket_of_the_user_with_4004_and_the_user_may_return(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let laptop = app.login(&player.username).await;
        let mut sockets =
            vec![app.connect_ws(&player.access_token).await, app.connect_ws(&laptop.access_token).await];

        let path = format!("/api/admin/users/{}/kick", player.user_id);
        let response = app.post_auth(&path, &admin.access_token, Some(json!({"reason": "spamming"}))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"sessions_revoked": 2, "sockets_closed": 2}));
        for socket in &mut sockets {
            let closed = socket.next_close_within(Duration::from_secs(1)).await;
            assert_eq!((closed.code, closed.reason.as_str()), (4004, "kicked: spamming"));
        }
        expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
        expect_error(app.refresh(&laptop.refresh_token).await, 401, "session_revoked").await;
        let mut again = app.ws_with(&[("authorization", &format!("Bearer {}", laptop.access_token))], "").await;
        assert_eq!(again.next_close().await.code, 4004, "a reconnecting client learns why");
        assert_eq!(login_status(&app, &player.username).await.status(), 200, "a kicked user may log in again");
    }
}

on_both_backends! {
    async fn a_ban_closes_sockets_with_4003_and_refuses_login_and_refresh_until_unbanned(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let mut socket = app.connect_ws(&player.access_token).await;

        let path = format!("/api/admin/users/{}/ban", player.user_id);
        let response = app.post_auth(&path, &admin.access_token, Some(json!({"reason": "cheating"}))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"sessions_revoked": 1, "sockets_closed": 1}));
        let closed = socket.next_close_within(Duration::from_secs(1)).await;
        assert_eq!((closed.code, closed.reason.as_str()), (4003, "banned: cheating"));

        expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
        let refused = expect_error(login_status(&app, &player.username).await, 403, "banned").await;
        assert_eq!((&refused["reason"], &refused["until"]), (&json!("cheating"), &Value::Null), "{refused}");
        expect_error(app.refresh(&player.refresh_token).await, 403, "banned").await;
        let wrong_password = app
            .post_json("/api/auth/login", json!({"username": player.username, "password": "not the password"}))
            .await;
        expect_error(wrong_password, 401, "invalid_credentials").await;
        let mut again = app.ws_with(&[("authorization", &format!("Bearer {}", player.access_token))], "").await;
        assert_eq!(again.next_close().await, Closed { code: 4003, reason: "banned: cheating".into() });

        let unban = app.http.delete(app.url(&path)).bearer_auth(&admin.access_token).send().await.unwrap();
        assert_eq!(unban.status(), 204);
        assert_eq!(login_status(&app, &player.username).await.status(), 200);
        let unban_again = app.http.delete(app.url(&path)).bearer_auth(&admin.access_token).send().await.unwrap();
        assert_eq!(unban_again.status(), 204, "unbanning a user who is not banned");
    }
}

on_both_backends! {
    async fn a_ban_with_until_lifts_itself_without_a_restart(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let until = time::OffsetDateTime::now_utc() + Duration::from_secs(3);
        let until_text =
            until.replace_nanosecond(0).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
        let path = format!("/api/admin/users/{}/ban", player.user_id);
        let response = app
            .post_auth(&path, &admin.access_token, Some(json!({"reason": "cool off", "until": until_text})))
            .await;
        assert_eq!(response.status(), 200);
        let refused = expect_error(login_status(&app, &player.username).await, 403, "banned").await;
        assert_eq!(refused["until"], until_text.as_str());

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = login_status(&app, &player.username).await.status();
            if status == 200 {
                break;
            }
            assert_eq!(status, 403);
            assert!(tokio::time::Instant::now() < deadline, "the ban did not lift by its until");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(time::OffsetDateTime::now_utc() >= until.replace_nanosecond(0).unwrap(), "lifted too early");
    }
}

on_both_backends! {
    async fn an_admin_cannot_ban_themselves_nor_ban_into_the_past_nor_act_on_unknown_users(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let own = format!("/api/admin/users/{}/ban", admin.user_id);
        expect_error(
            app.post_auth(&own, &admin.access_token, Some(json!({"reason": "oops"}))).await,
            403,
            "forbidden",
        )
        .await;
        assert_eq!(app.get_me(&admin.access_token).await.status(), 200);
        let past = format!("/api/admin/users/{}/ban", player.user_id);
        let body = json!({"until": "2001-01-01T00:00:00Z"});
        expect_error(app.post_auth(&past, &admin.access_token, Some(body)).await, 422, "invalid_request").await;
        let ghost = uuid::Uuid::new_v4();
        for path in [format!("/api/admin/users/{ghost}/kick"), format!("/api/admin/users/{ghost}/ban")] {
            expect_error(app.post_auth(&path, &admin.access_token, Some(json!({}))).await, 404, "not_found")
                .await;
        }
        let unban = app
            .http
            .delete(app.url(&format!("/api/admin/users/{ghost}/ban")))
            .bearer_auth(&admin.access_token)
            .send()
            .await
            .unwrap();
        expect_error(unban, 404, "not_found").await;
    }
}

on_both_backends! {
    async fn revoke_all_closes_every_session_but_the_callers(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let admin_elsewhere = app.login(&admin.username).await;
        let mut sockets = Vec::new();
        for _ in 0..3 {
            let player = app.new_player().await;
            sockets.push(app.connect_ws(&player.access_token).await);
        }
        sockets.push(app.connect_ws(&admin_elsewhere.access_token).await);
        let mut own_socket = app.connect_ws(&admin.access_token).await;

        let response = app
            .post_auth("/api/admin/revoke-all", &admin.access_token, Some(json!({"reason": "maintenance"})))
            .await;
        assert_eq!(response.status(), 200);
        let counts: Value = response.json().await.unwrap();
        assert_eq!(counts, json!({"sessions_revoked": 4, "sockets_closed": 4}));
        for socket in &mut sockets {
            let closed = socket.next_close_within(Duration::from_secs(1)).await;
            assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: maintenance"));
        }
        assert_eq!(app.get_me(&admin.access_token).await.status(), 200);
        own_socket.send_json(json!({"type": "ping", "t": 1})).await;
        assert_eq!(own_socket.next_json().await["type"], "pong");
        expect_error(app.get_me(&admin_elsewhere.access_token).await, 401, "session_revoked").await;
    }
}

on_both_backends! {
    async fn the_audit_trail_records_every_admin_action_newest_first(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let _socket = app.connect_ws(&player.access_token).await;
        let user = &player.user_id;
        let revoke_path = format!("/api/admin/sessions/{}/revoke", player.session_id);
        app.post_auth(&revoke_path, &admin.access_token, Some(json!({"reason": "r1"}))).await;
        app.login(&player.username).await;
        app.post_auth(
            &format!("/api/admin/users/{user}/kick"),
            &admin.access_token,
            Some(json!({"reason": "r2"})),
        )
        .await;
        let until = "2999-01-01T00:00:00Z";
        let ban = json!({"reason": "r3", "until": until});
        app.post_auth(&format!("/api/admin/users/{user}/ban"), &admin.access_token, Some(ban)).await;
        app.http
            .delete(app.url(&format!("/api/admin/users/{user}/ban")))
            .bearer_auth(&admin.access_token)
            .send()
            .await
            .unwrap();
        app.post_auth("/api/admin/revoke-all", &admin.access_token, Some(json!({"reason": "r5"}))).await;

        let response = app.get_auth("/api/admin/audit", &admin.access_token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let entries = body["entries"].as_array().unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["revoke_all", "unban", "ban", "kick", "revoke_session"]);
        let revoke = &entries[4];
        assert_eq!(revoke["target_type"], "session");
        assert_eq!(revoke["target_id"], player.session_id.as_str());
        assert_eq!((revoke["reason"].as_str(), revoke["sessions_revoked"].as_u64()), (Some("r1"), Some(1)));
        assert_eq!(revoke["sockets_closed"], 1);
        let kick = &entries[3];
        assert_eq!(
            (kick["target_type"].as_str(), kick["target_id"].as_str()),
            (Some("user"), Some(user.as_str()))
        );
        assert_eq!((kick["reason"].as_str(), kick["sessions_revoked"].as_u64()), (Some("r2"), Some(1)));
        assert_eq!(entries[2]["until"], until);
        assert!(entries[3].get("until").is_none(), "only a ban carries until");
        assert_eq!(entries[0]["target_type"], "all");
        for entry in entries {
            assert_eq!(entry["actor_id"], admin.user_id.as_str());
            assert_eq!(entry["actor_name"], admin.username.as_str());
            assert!(entry["at"].as_str().unwrap().ends_with('Z'));
            assert!(uuid::Uuid::parse_str(entry["id"].as_str().unwrap()).is_ok());
        }
        let limited: Value =
            app.get_auth("/api/admin/audit?limit=2", &admin.access_token).await.json().await.unwrap();
        assert_eq!(limited["entries"].as_array().unwrap().len(), 2);
        expect_error(app.get_auth("/api/admin/audit", &player.access_token).await, 401, "session_revoked").await;
    }
}

on_both_backends! {
    async fn the_admin_session_list_filters_by_user_and_online_and_counts_sockets(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let online = app.new_player().await;
        let offline = app.new_player().await;
        let _a = app.connect_ws(&online.access_token).await;
        let _b = app.connect_ws(&online.access_token).await;

        let all: Value = app.get_auth("/api/admin/sessions", &admin.access_token).await.json().await.unwrap();
        let ids: Vec<&str> =
            all["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        for player in [&online, &offline, &admin] {
            assert!(ids.contains(&player.session_id.as_str()), "{all}");
        }
        let only_online: Value = app
            .get_auth("/api/admin/sessions?user_id=&online=true", &admin.access_token)
            .await
            .json()
            .await
            .unwrap();
        let sessions = only_online["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1, "{only_online}");
        let session = &sessions[0];
        assert_eq!(session["id"], online.session_id.as_str());
        assert_eq!(session["user_id"], online.user_id.as_str());
        assert_eq!(session["username"], online.username.as_str());
        assert_eq!(session["sockets"], 2);
        assert_eq!(session["nodes"].as_array().unwrap().len(), 1);
        assert_eq!(session["nodes"][0], app.state.node_id.as_ref());
        let of_user: Value = app
            .get_auth(&format!("/api/admin/sessions?user_id={}", offline.user_id), &admin.access_token)
            .await
            .json()
            .await
            .unwrap();
        let sessions = of_user["sessions"].as_array().unwrap();
        assert_eq!((sessions.len(), &sessions[0]["sockets"]), (1, &json!(0)));
        let bad = app.get_auth("/api/admin/sessions?user_id=nope", &admin.access_token).await;
        expect_error(bad, 400, "invalid_request").await;
        expect_error(app.get_auth("/api/admin/sessions", &online.access_token).await, 403, "forbidden").await;
        expect_error(app.http.get(app.url("/api/admin/sessions")).send().await.unwrap(), 401, "invalid_token")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_refuses_a_player_with_403_and_no_token_with_401() {
    let app = spawn_app().await;
    let player = app.new_player().await;
    let uid = &player.user_id;
    let sid = &player.session_id;
    let routes = [
        ("GET", "/api/admin/sessions".to_owned()),
        ("POST", format!("/api/admin/sessions/{sid}/revoke")),
        ("POST", format!("/api/admin/users/{uid}/kick")),
        ("POST", format!("/api/admin/users/{uid}/ban")),
        ("DELETE", format!("/api/admin/users/{uid}/ban")),
        ("POST", "/api/admin/revoke-all".to_owned()),
        ("GET", "/api/admin/audit".to_owned()),
    ];
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let as_player = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(&player.access_token)
            .json(&json!({}));
        expect_error(as_player.send().await.unwrap(), 403, "forbidden").await;
        let anonymous = app.http.request(method, app.url(&path)).json(&json!({}));
        expect_error(anonymous.send().await.unwrap(), 401, "invalid_token").await;
    }
    assert_eq!(app.get_me(&player.access_token).await.status(), 200);
}

on_both_backends! {
    async fn with_the_single_session_policy_a_new_login_replaces_the_older_sessions(db) {
        let app = spawn_with(db, |config| config.single_session = true).await;
        let first = app.new_player().await;
        let mut socket = app.connect_ws(&first.access_token).await;
        let second = app.login(&first.username).await;
        let closed = socket.next_close_within(Duration::from_secs(1)).await;
        assert_eq!((closed.code, closed.reason.as_str()), (4005, "replaced: a newer login took over"));
        expect_error(app.get_me(&first.access_token).await, 401, "session_revoked").await;
        expect_error(app.refresh(&first.refresh_token).await, 401, "session_revoked").await;
        let mut again = app.ws_with(&[("authorization", &format!("Bearer {}", first.access_token))], "").await;
        assert_eq!(again.next_close().await.code, 4005);
        assert_eq!(app.get_me(&second.access_token).await.status(), 200);
        let other = app.new_player().await;
        assert_eq!(app.get_me(&other.access_token).await.status(), 200, "other users are untouched");
    }
}
