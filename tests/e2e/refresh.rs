//! Refresh tokens: rotation, theft detection, races, and the session's end.

use serde_json::Value;
use std::time::Duration;
use tether_e2e::*;

on_both_backends! {
    async fn refresh_rotates_and_the_new_pair_works(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let response = app.refresh(&player.refresh_token).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()["set-cookie"].to_str().unwrap().starts_with("tether_refresh="));
        let pair: Value = response.json().await.unwrap();
        assert_eq!(pair["session_id"], player.session_id.as_str(), "a refresh keeps the session");
        assert_ne!(pair["refresh_token"], player.refresh_token.as_str());
        let access = pair["access_token"].as_str().unwrap();
        assert_eq!(app.get_me(access).await.status(), 200);
        let again = app.refresh(pair["refresh_token"].as_str().unwrap()).await;
        assert_eq!(again.status(), 200, "the rotated token refreshes in turn");
    }
}

on_both_backends! {
    async fn refresh_takes_the_cookie_when_the_body_is_empty_and_the_body_wins_over_it(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let response = app
            .http
            .post(app.url("/api/auth/refresh"))
            .header("cookie", format!("tether_refresh={}", player.refresh_token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let pair: Value = response.json().await.unwrap();

        // The body names the live token; the cookie carries a dead one that would
        // otherwise count as reuse.
        let response = app
            .http
            .post(app.url("/api/auth/refresh"))
            .header("cookie", format!("tether_refresh={}", player.refresh_token))
            .json(&serde_json::json!({"refresh_token": pair["refresh_token"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        expect_error(
            app.post_json("/api/auth/refresh", serde_json::json!({})).await,
            401,
            "invalid_refresh_token",
        )
        .await;
    }
}

on_both_backends! {
    async fn an_unknown_refresh_token_is_refused_without_harm(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        expect_error(app.refresh("not-a-token").await, 401, "invalid_refresh_token").await;
        assert_eq!(app.get_me(&player.access_token).await.status(), 200);
    }
}

on_both_backends! {
    async fn presenting_a_rotated_refresh_token_revokes_the_session_and_closes_its_sockets_first(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let stolen = player.refresh_token.clone();
        let rotated: Value = app.refresh(&player.refresh_token).await.json().await.unwrap();
        let access = rotated["access_token"].as_str().unwrap().to_owned();
        let mut socket_a = app.connect_ws(&access).await;
        let mut socket_b = app.connect_ws(&player.access_token).await;

        expect_error(app.refresh(&stolen).await, 401, "invalid_refresh_token").await;
        for socket in [&mut socket_a, &mut socket_b] {
            let closed = socket.next_close_within(Duration::from_secs(1)).await;
            assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: refresh token reuse"));
        }
        expect_error(app.get_me(&access).await, 401, "session_revoked").await;
        let latest = rotated["refresh_token"].as_str().unwrap();
        expect_error(app.refresh(latest).await, 401, "session_revoked").await;
    }
}

on_both_backends! {
    async fn of_concurrent_refreshes_with_one_token_exactly_one_succeeds(db) {
        let app = spawn_with(db, |_| {}).await;
        for _ in 0..3 {
            let player = app.new_player().await;
            let attempts = (0..8).map(|_| app.refresh(&player.refresh_token));
            let mut winners = Vec::new();
            let mut statuses = Vec::new();
            for response in futures_util::future::join_all(attempts).await {
                statuses.push(response.status().as_u16());
                if response.status() == 200 {
                    winners.push(response.json::<Value>().await.unwrap());
                }
            }
            assert_eq!(winners.len(), 1, "{statuses:?}");
            assert!(statuses.iter().all(|&s| s == 200 || s == 401), "{statuses:?}");
            // The losers presented a token that had just been rotated: that is reuse,
            // so the session, and with it the winner's pair, is revoked too.
            let access = winners[0]["access_token"].as_str().unwrap();
            expect_error(app.get_me(access).await, 401, "session_revoked").await;
        }
    }
}

on_both_backends! {
    async fn a_refresh_racing_a_logout_never_yields_a_live_token(db) {
        let app = spawn_with(db, |_| {}).await;
        for _ in 0..10 {
            let player = app.new_player().await;
            let (refreshed, logout) = tokio::join!(
                app.refresh(&player.refresh_token),
                app.post_auth("/api/auth/logout", &player.access_token, None)
            );
            assert_eq!(logout.status(), 204);
            if refreshed.status() == 200 {
                let pair: Value = refreshed.json().await.unwrap();
                let access = pair["access_token"].as_str().unwrap();
                expect_error(app.get_me(access).await, 401, "session_revoked").await;
                let next = app.refresh(pair["refresh_token"].as_str().unwrap()).await;
                expect_error(next, 401, "session_revoked").await;
            } else {
                assert_eq!(refreshed.status(), 401);
            }
        }
    }
}

on_both_backends! {
    async fn a_session_ends_at_its_absolute_lifetime_on_http_sockets_and_refresh(db) {
        let app = spawn_with(db, |config| config.session_ttl = Duration::from_secs(2)).await;
        let player = app.new_player().await;
        let mut socket = app.connect_ws(&player.access_token).await;
        let closed = socket.next_close_within(Duration::from_secs(6)).await;
        assert_eq!((closed.code, closed.reason.as_str()), (4002, "expired"));
        expect_error(app.get_me(&player.access_token).await, 401, "session_expired").await;
        expect_error(app.refresh(&player.refresh_token).await, 401, "session_expired").await;
        let mut late = app.ws_with(&[("authorization", &format!("Bearer {}", player.access_token))], "").await;
        assert_eq!(late.next_close().await.code, 4002);
    }
}
