//! Every limit answers with the contract's code, and the server keeps serving others.

use futures_util::StreamExt as _;
use serde_json::json;
use std::time::Duration;
use tether_e2e::*;
use tokio_tungstenite::tungstenite::Message;

async fn login_attempt(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.post_json("/api/auth/login", json!({"username": username, "password": password})).await
}

async fn expect_rate_limited(response: reqwest::Response) {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_error(response, 429, "rate_limited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_per_ip_are_limited_with_429_and_retry_after() {
    let app = spawn_with(TestDb::sqlite(), |config| config.auth_per_ip_per_minute = 3).await;
    let name = unique_name("p");
    assert_eq!(app.register(&name).await.status(), 201);
    for _ in 0..5 {
        assert_eq!(login_attempt(&app, &name, PASSWORD).await.status(), 200, "successes are not counted");
    }
    for other in ["a", "b", "c"] {
        let response = login_attempt(&app, &unique_name(other), "wrong password").await;
        assert_eq!(response.status(), 401);
    }
    expect_rate_limited(login_attempt(&app, &name, PASSWORD).await).await;
    // Registration has a limit of its own.
    assert_eq!(app.register(&unique_name("p")).await.status(), 201);
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_per_username_are_limited_alike_for_known_and_unknown_names() {
    let app = spawn_with(TestDb::sqlite(), |config| config.auth_per_username_per_minute = 2).await;
    let known = unique_name("known");
    app.create_user(&known, "player").await;
    let ghost = unique_name("ghost");
    for name in [&known, &ghost] {
        for _ in 0..2 {
            expect_error(login_attempt(&app, name, "wrong password").await, 401, "invalid_credentials").await;
        }
        expect_rate_limited(login_attempt(&app, &name.to_uppercase(), PASSWORD).await).await;
    }
    // The limit is per name: another player is untouched.
    let other = app.new_player().await;
    assert_eq!(app.get_me(&other.access_token).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_per_ip_are_limited_with_429_before_any_socket() {
    let app = spawn_with(TestDb::sqlite(), |config| config.upgrades_per_ip_per_minute = 2).await;
    let player = app.new_player().await;
    let auth = format!("Bearer {}", player.access_token);
    let _a = app.ws_with(&[("authorization", &auth)], "").await;
    let _b = app.ws_with(&[("authorization", &auth)], "").await;
    match app.try_ws_with(&[("authorization", &auth)], "").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected HTTP 429, got {:?}", other.map(|_| "a socket")),
    }
    assert_eq!(app.get_me(&player.access_token).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_sending_too_fast_is_closed_with_1008_after_its_burst() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.ws_messages_per_second = 5;
        config.ws_message_burst = 10;
    })
    .await;
    let player = app.new_player().await;
    let mut flooder = app.connect_ws(&player.access_token).await;
    for t in 0..40 {
        flooder.send_json(json!({"type": "ping", "t": t})).await;
    }
    let (pongs, closed) = flooder.frames_until_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (1008, "message rate exceeded"));
    assert!((10..=12).contains(&pongs.len()), "the burst was answered: {}", pongs.len());
    let mut calm = app.connect_ws(&player.access_token).await;
    calm.send_json(json!({"type": "ping", "t": 1})).await;
    assert_eq!(calm.next_json().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stays_slow_is_closed_with_1008() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.tick_rate = 100;
        config.ws_outbound_queue = 4;
        config.ws_slow_consumer_drops = 5;
        config.tcp_send_buffer_bytes = Some(4096);
    })
    .await;
    let (watcher, player) = (app.new_player().await, app.new_player().await);
    let mut fine = app.connect_ws(&watcher.access_token).await;
    fine.send_json(json!({"type": "join", "room": "busy"})).await;
    fine.next_of_type("joined").await;
    let mut slow = app.slow_reader_ws(&player.access_token).await;
    slow.send_json(json!({"type": "join", "room": "busy"})).await;
    // It reads nothing until it is found slow: the kernel buffers fill, then its queue,
    // then the snapshots it cannot take are dropped until it counts as slow. Its socket
    // leaves the room before writing the close frame, so the room tells the watcher
    // (who reads all along) first; then the slow one reads, and the close can go out.
    let arrived = fine.next_matching("the slow player's arrival", |m| m["type"] == "presence").await;
    assert_eq!(arrived["player"]["name"], player.username.as_str());
    let gone = fine.next_matching("the slow player leaving", |m| m["type"] == "presence").await;
    assert_eq!(
        (gone["event"].as_str(), gone["player"]["name"].as_str()),
        (Some("leave"), Some(player.username.as_str()))
    );
    let (_, closed) = slow.frames_until_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (1008, "slow consumer"));

    fine.send_json(json!({"type": "ping", "t": 1})).await;
    assert_eq!(fine.next_of_type("pong").await["t"], 1, "a reader that keeps up is still served");
    let other = app.new_player().await;
    let mut late = app.connect_ws(&other.access_token).await;
    late.send_json(json!({"type": "join", "room": "busy"})).await;
    assert_eq!(late.next_of_type("joined").await["room"], "busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_ping_is_dropped() {
    let app = spawn_with(TestDb::sqlite(), |config| config.ws_ping_interval = Duration::from_secs(1)).await;
    let player = app.new_player().await;
    // tungstenite answers pings only while the client reads: a client that never
    // reads looks dead, as a vanished phone would. (The next test reads.)
    let _silent = app.connect_ws(&player.access_token).await;
    assert_eq!(app.open_sockets(&player.session_id), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while app.open_sockets(&player.session_id) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the silent socket is still registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_pings_stays_connected() {
    let app = spawn_with(TestDb::sqlite(), |config| config.ws_ping_interval = Duration::from_secs(1)).await;
    let player = app.new_player().await;
    let mut alive = app.connect_ws(&player.access_token).await;
    // It sends nothing of its own (any frame would count as a sign of life): only the
    // pongs tungstenite writes as it reads each ping. Three intervals, where two silent
    // ones drop a peer (the test above).
    let mut pings = 0;
    let window = tokio::time::sleep(Duration::from_millis(3500));
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            message = alive.stream.next() => match message {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("only pings were expected, got {other:?} after {pings} pings"),
            },
        }
    }
    assert!(pings >= 2, "the server pinged {pings} times in three intervals");
    assert_eq!(app.open_sockets(&player.session_id), 1);
    alive.send_json(json!({"type": "ping", "t": 1})).await;
    assert_eq!(alive.next_json().await["type"], "pong");
}

/// The sum of the samples of `series` (a name, or a name and all its labels as the
/// exporter writes them) in a Prometheus scrape; 0 when it has none.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape.lines().filter_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok()).sum()
}

on_both_backends! {
    async fn revoking_moves_the_metrics(db) {
        // The metrics recorder is process-wide, so every in-process server of this test
        // binary shares one, and any other test's logout would move the same counters. A
        // `tether serve` process has its own: each change below is this test's alone.
        let server = tether_e2e::process::serve_on(&db).await;
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        let base = server.base();
        let scrape = || async { http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap() };
        let before = scrape().await;

        let name = unique_name("p");
        let credentials = json!({"username": name, "password": PASSWORD});
        let registered = http.post(format!("{base}/api/auth/register")).json(&credentials).send().await.unwrap();
        assert_eq!(registered.status(), 201);
        let login: serde_json::Value =
            http.post(format!("{base}/api/auth/login")).json(&credentials).send().await.unwrap().json().await.unwrap();
        let token = login["access_token"].as_str().unwrap();
        let mut socket = connect_ws_at(&server.addr, token).await;
        let during = scrape().await;
        assert_eq!(sample(&during, "tether_sockets_open"), 1.0, "{during}");
        assert_eq!(sample(&during, "tether_sessions_active"), 1.0, "{during}");

        let logout = http.post(format!("{base}/api/auth/logout")).bearer_auth(token).send().await.unwrap();
        assert_eq!(logout.status(), 204);
        assert_eq!(socket.next_close().await.code, 4001);
        let me = http.get(format!("{base}/api/me")).bearer_auth(token).send().await.unwrap();
        expect_error(me, 401, "session_revoked").await;
        let after = scrape().await;

        let moved = |series: &str| sample(&after, series) - sample(&before, series);
        assert_eq!(moved(r#"tether_revocations_total{kind="logout"}"#), 1.0, "{after}");
        assert_eq!(moved("tether_revoke_to_close_seconds_count"), 1.0, "{after}");
        assert_eq!(moved(r#"tether_close_codes_total{code="4001"}"#), 1.0, "{after}");
        assert_eq!(moved(r#"tether_auth_failures_total{reason="session_revoked"}"#), 1.0, "{after}");
        assert_eq!(moved("tether_sockets_aborted_total"), 0.0, "{after}");
        assert_eq!(sample(&after, "tether_sockets_open"), 0.0, "{after}");
        assert_eq!(sample(&after, "tether_sessions_active"), 0.0, "{after}");
        assert_eq!(sample(&after, "tether_sessions_revoked_still_connected"), 0.0, "{after}");
        let me_refused = r#"tether_http_request_duration_seconds_count{route="/api/me",method="GET",status="401"}"#;
        assert_eq!(moved(me_refused), 1.0, "{after}");
    }
}
