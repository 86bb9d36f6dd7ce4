//! The WebSocket: transports, welcome, ping/pong, bad frames, Origin, and
//! close-before-ack (the close frame ahead of queued traffic, or an abort).

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use std::time::Duration;
use tether_e2e::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_transport_gets_welcome() {
    let app = spawn_app().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_with_the_same_number_as_written() {
    let app = spawn_app().await;
    let player = app.new_player().await;
    let mut socket = app.connect_ws(&player.access_token).await;
    for t in ["1", "-2.50", "1e3", "12345678901234567890123", "0.1"] {
        socket.send_text(&format!(r#"{{"type":"ping","t":{t}}}"#)).await;
        assert_eq!(socket.next_text().await, format!(r#"{{"type":"pong","t":{t}}}"#));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_gets_an_error_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let player = app.new_player().await;
    let mut socket = app.connect_ws(&player.access_token).await;
    for bad in ["not json", r#"{"type":"dance"}"#, r#"{"type":"ping","t":"x"}"#, r#"{"type":"ping"}"#] {
        socket.send_text(bad).await;
        let error = socket.next_json().await;
        assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("bad_message")));
    }
    socket.stream.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(socket.next_json().await["code"], "bad_message");
    socket.send_json(json!({"type": "ping", "t": 7})).await;
    assert_eq!(socket.next_json().await, json!({"type": "pong", "t": 7}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_frames_end_in_1008() {
    let app = spawn_with(TestDb::sqlite(), |config| config.ws_max_bad_frames = 3).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_closed_with_1009() {
    let app = spawn_with(TestDb::sqlite(), |config| config.ws_max_message = 1024).await;
    let player = app.new_player().await;
    let mut socket = app.connect_ws(&player.access_token).await;
    socket.send_text(&format!(r#"{{"type":"ping","t":1,"pad":"{}"}}"#, "x".repeat(4096))).await;
    let closed = socket.next_close().await;
    assert_eq!(closed.code, 1009);
    let mut fresh = app.connect_ws(&player.access_token).await;
    fresh.send_json(json!({"type": "ping", "t": 1})).await;
    assert_eq!(fresh.next_json().await["type"], "pong", "the server still serves");
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
        let socket = app.connect_ws(&player.access_token).await;
        let (mut sink, mut stream) = socket.stream.split();
        // Far more pings than the server answers in the time a logout takes. All of them
        // are written before the logout is sent, so when it lands most are still waiting
        // for the socket task, their pongs not yet written. The task puts its close order
        // ahead of everything else it could do, so the close comes next, and a server that
        // answered what it had been sent first would show all of them here.
        //
        // And few enough that all their pongs (26 bytes each) fit in the kernel's buffers
        // (the client's 128 KiB receive buffer and the server's 16 KiB send buffer, before
        // autotuning) even if this reader is not scheduled for a while on a busy machine:
        // the server's writes then never block, so its close frame can always be written
        // at once instead of the socket being aborted, which close-before-ack also allows.
        // (20,000 pings once ended in a reset in CI.)
        const PINGS: u64 = 4_000;
        let written = tokio::spawn(async move {
            for t in 0..PINGS {
                sink.feed(Message::text(format!(r#"{{"type":"ping","t":{t}}}"#))).await.expect("send a ping");
            }
            sink.flush().await.expect("send the pings");
            sink
        });
        // This client keeps reading, so the server's writes never wait on it: its close
        // frame can go at once, and it is not aborted.
        let read = tokio::spawn(async move {
            let mut pongs = 0;
            loop {
                match tokio::time::timeout(WAIT, stream.next()).await.expect("a frame arrives in time") {
                    Some(Ok(Message::Text(text))) => {
                        assert_eq!(text.as_str(), format!(r#"{{"type":"pong","t":{pongs}}}"#), "pongs in order");
                        pongs += 1;
                    }
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return (pongs, Closed { code: u16::from(frame.code), reason: frame.reason.to_string() });
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("the connection ended without a close frame after {pongs} pongs: {other:?}"),
                }
            }
        });
        let _sink = tokio::time::timeout(WAIT, written).await.expect("the pings are written in time").unwrap();
        let response = app.post_auth("/api/auth/logout", &player.access_token, None).await;
        assert_eq!(response.status(), 204);
        let (pongs, closed) = read.await.unwrap();
        assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: logout"));
        assert!(pongs < PINGS, "the close came after every pong: nothing was left queued ahead of it");
    }
}

on_both_backends! {
    async fn a_revoked_socket_that_cannot_take_its_close_frame_is_aborted_with_its_queue_unsent(db) {
        const QUEUE: usize = 128;
        let app = spawn_with(db, |config| {
            config.tick_rate = 120;
            config.ws_outbound_queue = QUEUE;
            config.ws_slow_consumer_drops = u32::MAX;
            config.tcp_send_buffer_bytes = Some(4096);
        })
        .await;
        let (watcher, player) = (app.new_player().await, app.new_player().await);
        let mut watching = app.connect_ws(&watcher.access_token).await;
        watching.send_json(json!({"type": "join", "room": "jam"})).await;
        watching.next_of_type("joined").await;
        let mut stuck = app.slow_reader_ws(&player.access_token).await;
        stuck.send_json(json!({"type": "join", "room": "jam"})).await;
        // From here `stuck` reads nothing. Each tick queues it a snapshot: the first few
        // fill the kernel buffers (a few KiB each way) and stall its writes; after that
        // each replaces the one waiting unsent in its queue, for this many ticks.
        let arrived = watching.next_matching("the stuck player's arrival", |m| m["type"] == "presence").await;
        assert_eq!(arrived["player"]["name"], player.username.as_str());
        let first = watching.next_of_type("snapshot").await["tick"].as_u64().unwrap();
        let full = first + QUEUE as u64 + 100;
        watching.next_matching("the tick that fills the queue", |m| m["tick"].as_u64() >= Some(full)).await;

        let started = std::time::Instant::now();
        let response = app.post_auth("/api/auth/logout", &player.access_token, None).await;
        assert_eq!(response.status(), 204);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the logout waited on a peer that does not read: {:?}",
            started.elapsed()
        );
        let (frames, closed) = stuck.frames_until_end().await;
        assert_eq!(closed, None, "a close frame was waited for: the socket was not aborted");
        assert!(
            frames.len() < QUEUE,
            "{} frames reached the peer after the revocation: its queue of {QUEUE} was sent",
            frames.len()
        );
        let gone = watching.next_matching("the stuck player leaving", |m| m["type"] == "presence").await;
        assert_eq!((gone["event"].as_str(), gone["player"]["name"].as_str()), (Some("leave"), Some(player.username.as_str())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_from_a_foreign_origin_is_refused_with_403() {
    let app = spawn_with(TestDb::sqlite(), |config| {
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
