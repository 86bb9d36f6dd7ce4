//! The WebSocket: transports, welcome, ping/pong, bad frames, Origin, and
//! close-before-ack.

use serde_json::json;
use std::time::Duration;
use tether_e2e::*;

on_both_backends! {
    async fn each_token_transport_gets_welcome(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let token = &player.access_token;

        let mut by_header = app.ws_with(&[("authorization", &format!("Bearer {token}"))], "").await;
        let welcome = by_header.next_json().await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["session_id"], player.session_id.as_str());
        assert_eq!(welcome["user"]["id"], player.user_id.as_str());
        assert_eq!(welcome["user"]["username"], player.username.as_str());
        assert_eq!(welcome["user"]["role"], "player");
        assert!(welcome["server_time"].as_str().unwrap().ends_with('Z'));

        let protocols = format!("tether.v1, tether.bearer.{token}");
        let mut by_protocol = app.ws_with(&[("sec-websocket-protocol", &protocols)], "").await;
        assert_eq!(by_protocol.protocol.as_deref(), Some("tether.v1"), "the token is never echoed");
        assert_eq!(by_protocol.next_json().await["type"], "welcome");

        let mut by_query = app.ws_with(&[], &format!("?access_token={token}")).await;
        assert_eq!(by_query.next_json().await["type"], "welcome");
    }
}

on_both_backends! {
    async fn ping_gets_pong_with_the_same_number_as_written(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let mut socket = app.connect_ws(&player.access_token).await;
        for t in ["1", "-2.50", "1e3", "12345678901234567890123", "0.1"] {
            socket.send_text(&format!(r#"{{"type":"ping","t":{t}}}"#)).await;
            assert_eq!(socket.next_text().await, format!(r#"{{"type":"pong","t":{t}}}"#));
        }
    }
}

on_both_backends! {
    async fn a_bad_frame_gets_an_error_and_the_socket_stays_open(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let mut socket = app.connect_ws(&player.access_token).await;
        for bad in ["not json", r#"{"type":"dance"}"#, r#"{"type":"ping","t":"x"}"#, r#"{"type":"ping"}"#] {
            socket.send_text(bad).await;
            let error = socket.next_json().await;
            assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("bad_message")));
        }
        use futures_util::SinkExt as _;
        socket.stream.send(tokio_tungstenite::tungstenite::Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(socket.next_json().await["code"], "bad_message");
        socket.send_json(json!({"type": "ping", "t": 7})).await;
        assert_eq!(socket.next_json().await, json!({"type": "pong", "t": 7}));
    }
}

on_both_backends! {
    async fn repeated_bad_frames_end_in_1008(db) {
        let app = spawn_with(db, |config| config.ws_max_bad_frames = 3).await;
        let player = app.new_player().await;
        let mut socket = app.connect_ws(&player.access_token).await;
        for _ in 0..4 {
            socket.send_text("nope").await;
        }
        let (errors, closed) = socket.frames_until_close().await;
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!((closed.code, closed.reason.as_str()), (1008, "too many bad frames"));
        assert_eq!(app.get_me(&player.access_token).await.status(), 200, "the session itself is fine");
    }
}

on_both_backends! {
    async fn a_message_over_the_limit_is_closed_with_1009(db) {
        let app = spawn_with(db, |config| config.ws_max_message = 1024).await;
        let player = app.new_player().await;
        let mut socket = app.connect_ws(&player.access_token).await;
        socket.send_text(&format!(r#"{{"type":"ping","t":1,"pad":"{}"}}"#, "x".repeat(4096))).await;
        let closed = socket.next_close().await;
        assert_eq!(closed.code, 1009);
        let mut fresh = app.connect_ws(&player.access_token).await;
        fresh.send_json(json!({"type": "ping", "t": 1})).await;
        assert_eq!(fresh.next_json().await["type"], "pong", "the server still serves");
    }
}

on_both_backends! {
    async fn logout_closes_every_socket_of_the_session_before_it_answers(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let bystander = app.new_player().await;
        let mut sockets = Vec::new();
        for _ in 0..8 {
            sockets.push(app.connect_ws(&player.access_token).await);
        }
        let mut other = app.connect_ws(&bystander.access_token).await;

        let response = app.post_auth("/api/auth/logout", &player.access_token, None).await;
        assert_eq!(response.status(), 204);
        // The answer has been read: each close frame must already be on its way, so a
        // short bound suffices.
        for socket in &mut sockets {
            let closed = socket.next_close_within(Duration::from_secs(1)).await;
            assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: logout"));
        }
        other.send_json(json!({"type": "ping", "t": 1})).await;
        assert_eq!(other.next_json().await["type"], "pong", "other sessions keep their sockets");

        let mut refused = app.ws_with(&[("authorization", &format!("Bearer {}", player.access_token))], "").await;
        let (frames, closed) = refused.frames_until_close().await;
        assert!(frames.is_empty(), "no welcome for a revoked session: {frames:?}");
        assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: logout"));
    }
}

on_both_backends! {
    async fn the_close_frame_goes_ahead_of_queued_replies(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let mut socket = app.connect_ws(&player.access_token).await;
        // Pings the server has not answered yet when the revocation lands must not
        // delay the close: it may come before any of their pongs.
        for t in 0..50 {
            socket.send_json(json!({"type": "ping", "t": t})).await;
        }
        let response = app.post_auth("/api/auth/logout", &player.access_token, None).await;
        assert_eq!(response.status(), 204);
        let (_, closed) = socket.frames_until_close().await;
        assert_eq!(closed.code, 4001);
    }
}

on_both_backends! {
    async fn a_browser_from_a_foreign_origin_is_refused_with_403(db) {
        let app = spawn_with(db, |config| {
            config.allowed_origins = vec!["https://play.example".to_owned()];
        })
        .await;
        let player = app.new_player().await;
        let auth = format!("Bearer {}", player.access_token);
        let refused = app.try_ws_with(&[("authorization", &auth), ("origin", "https://evil.example")], "").await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
            other => panic!("expected an HTTP 403, got {:?}", other.map(|_| "a socket")),
        }
        for origin in ["https://play.example", "http://localhost:5173", &format!("http://{}", app.addr)] {
            let mut socket = app.ws_with(&[("authorization", &auth), ("origin", origin)], "").await;
            assert_eq!(socket.next_json().await["type"], "welcome", "{origin}");
        }
    }
}
