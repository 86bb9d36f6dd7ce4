//! Abuse resistance that lets honest players in: each test pairs a hostile client
//! with an honest one and checks that the first is stopped and the second is not.
//! Client addresses are loopback sources (127.0.0.x); the server binds 127.0.0.1.

use serde_json::{Value, json};
use std::time::Duration;
use tether_e2e::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    username: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("the login answers")
}

/// Whether the server has closed (or reset) this connection, waiting up to `bound`.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or 400 before the close is fine; keep reading to the end.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_party_of_100_registers_logs_in_and_connects_with_the_default_limits() {
    // The real argon2 cost too: the hash queue must be deep enough for all of them.
    let app = spawn_with(TestDb::sqlite(), |config| {
        with_default_limits(config);
        let defaults = tether::Config::defaults();
        config.argon2_memory_kib = defaults.argon2_memory_kib;
        config.argon2_iterations = defaults.argon2_iterations;
    })
    .await;
    let started = Instant::now();
    let names: Vec<String> = (0..100).map(|_| unique_name("lan")).collect();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let post = |path: &'static str, name: String| {
        let http = http.clone();
        let url = app.url(path);
        async move { http.post(url).json(&json!({"username": name, "password": PASSWORD})).send().await.unwrap() }
    };
    let registered =
        futures_util::future::join_all(names.iter().cloned().map(|n| post("/api/auth/register", n))).await;
    for response in &registered {
        assert_eq!(response.status(), 201, "{:?}", response.headers().get("retry-after"));
    }
    let logged_in =
        futures_util::future::join_all(names.iter().cloned().map(|n| post("/api/auth/login", n))).await;
    let mut tokens = Vec::new();
    for response in logged_in {
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let mut sockets = Vec::new();
    for token in &tokens {
        sockets.push(app.connect_ws(token).await);
    }
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    eprintln!("100 registrations, logins and sockets from one address in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_from_one_address_never_lock_the_owner_out_from_another() {
    let app = spawn_with(TestDb::sqlite(), with_default_limits).await;
    let victim = unique_name("victim");
    app.create_user(&victim, "player").await;
    let attacker = client_from("127.0.0.2");
    let mut limited_after = None;
    for attempt in 1..=40 {
        let response = login_from(&app, &attacker, &victim, "wrong password").await;
        match response.status().as_u16() {
            401 => continue,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                limited_after = Some(attempt);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let limited_after = limited_after.expect("the attacker is limited");
    assert!(limited_after <= 11, "limited only after {limited_after} attempts");
    // Even the right password from the attacker's address waits now...
    assert_eq!(login_from(&app, &attacker, &victim, PASSWORD).await.status(), 429);
    // ...but not from the victim's.
    let owner = client_from("127.0.0.3");
    assert_eq!(login_from(&app, &owner, &victim, PASSWORD).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_logins_are_never_counted_and_a_success_clears_its_own_failures() {
    let app = spawn_with(TestDb::sqlite(), |config| config.auth_per_username_per_minute = 3).await;
    let name = unique_name("p");
    app.create_user(&name, "player").await;
    for _ in 0..20 {
        assert_eq!(login_from(&app, &app.http, &name, PASSWORD).await.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(login_from(&app, &app.http, &name, "typo typo").await.status(), 401);
    }
    assert_eq!(login_from(&app, &app.http, &name, PASSWORD).await.status(), 200);
    // The pair starts over: three more typos before a 429.
    for _ in 0..3 {
        assert_eq!(login_from(&app, &app.http, &name, "typo typo").await.status(), 401);
    }
    assert_eq!(login_from(&app, &app.http, &name, PASSWORD).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_batch_is_dropped_within_the_header_timeout_while_others_are_served() {
    let header_timeout = Duration::from_secs(1);
    let app = spawn_with(TestDb::sqlite(), |config| config.header_timeout = header_timeout).await;
    let opened = Instant::now();
    let mut loris = Vec::new();
    for i in 0..40 {
        let mut tcp = tcp_from("127.0.0.4", app.addr).await;
        // Half start an HTTP/1 request, half an HTTP/2 preface: neither ever finishes.
        let start: &[u8] = if i % 2 == 0 { b"GET /healthz HTTP/1.1\r\nHost: x\r\n" } else { b"PR" };
        tcp.write_all(start).await.unwrap();
        loris.push(tcp);
    }
    // One byte each, every 200 ms, for at most 3 s: a header that never completes.
    let trickle = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut closed_at = vec![None; loris.len()];
        while Instant::now() < deadline && closed_at.iter().any(Option::is_none) {
            for (tcp, closed) in loris.iter_mut().zip(closed_at.iter_mut()) {
                if closed.is_some() {
                    continue;
                }
                let mut probe = [0u8; 64];
                let gone = match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await {
                    Ok(Ok(0) | Err(_)) => true,
                    _ => tcp.write_all(b"X").await.is_err(),
                };
                if gone {
                    *closed = Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed_at
    });
    let honest = Instant::now();
    let served = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert!(honest.elapsed() < Duration::from_secs(1), "an honest client waited {:?}", honest.elapsed());
    let closed_at = trickle.await.unwrap();
    for (i, closed) in closed_at.iter().enumerate() {
        let closed = closed.unwrap_or_else(|| panic!("slow connection {i} still open after 3 s"));
        let after = closed - opened;
        assert!(after < header_timeout + Duration::from_millis(900), "connection {i} closed after {after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_per_address_cap_is_reset_at_accept_while_another_address_is_served() {
    let app = spawn_with(TestDb::sqlite(), |config| config.max_connections_per_ip = 20).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        // One answered request each: the server has accepted all twenty before the next.
        let mut tcp = tcp_from("127.0.0.5", app.addr).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(tcp);
    }
    // Refused at accept: the reset may even beat the connect's own completion.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.5:0".parse().unwrap()).unwrap();
    if let Ok(mut one_more) = tokio::time::timeout(WAIT, socket.connect(app.addr)).await.expect("in time") {
        let _ = one_more.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let answer = tokio::time::timeout(Duration::from_secs(2), one_more.read(&mut buf)).await;
        assert!(
            matches!(answer, Ok(Ok(0) | Err(_))),
            "the 21st connection from one address is closed unanswered: {answer:?}"
        );
    }
    let other = client_from("127.0.0.6");
    assert_eq!(other.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    drop(held.remove(0));
    // Its place is free again (once the server has seen it go).
    let deadline = Instant::now() + WAIT;
    loop {
        let client = client_from("127.0.0.5");
        if let Ok(response) = client.get(app.url("/healthz")).send().await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_whose_clients_hang_up_cannot_push_concurrent_hashes_past_the_bound() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        // Slow enough hashes that the hang-ups come while they run.
        config.argon2_memory_kib = 8192;
        config.argon2_iterations = 3;
        config.password_hash_queue = 4;
    })
    .await;
    let name = unique_name("p");
    app.create_user(&name, "player").await;
    let body = json!({"username": name, "password": "wrong password"}).to_string();
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..60 {
        let mut tcp = tcp_from("127.0.0.8", app.addr).await;
        tcp.write_all(request.as_bytes()).await.unwrap();
        // Reset right after sending: the request is dropped while its hash may run.
        tcp.set_zero_linger().unwrap();
        drop(tcp);
    }
    let passwords = &app.state.passwords;
    let deadline = Instant::now() + Duration::from_secs(20);
    while passwords.peak() == 0 {
        assert!(Instant::now() < deadline, "no hash started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while passwords.running() + passwords.waiting() > 0 {
        assert!(passwords.running() <= passwords.concurrency());
        assert!(Instant::now() < deadline, "hashes still running");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(passwords.peak() >= 1, "no hash ran at all");
    assert!(passwords.peak() <= passwords.concurrency(), "{} hashes ran at once", passwords.peak());
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tether_password_hashes_running_peak"), "{metrics}");
    assert_eq!(login_from(&app, &app.http, &name, PASSWORD).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_hash_queue_logins_are_told_busy_with_retry_after() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.argon2_memory_kib = 8192;
        config.argon2_iterations = 3;
        config.password_hash_queue = 1;
    })
    .await;
    let name = unique_name("p");
    app.create_user(&name, "player").await;
    let attempts = (0..40).map(|_| login_from(&app, &app.http, &name, PASSWORD));
    let answers = futures_util::future::join_all(attempts).await;
    let mut busy = 0;
    for response in answers {
        match response.status().as_u16() {
            200 => {}
            503 => {
                busy += 1;
                assert_eq!(response.headers().get("retry-after").unwrap(), "1");
                expect_error(response, 503, "busy").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(busy > 0, "40 logins at once never overflowed a queue of 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_flood_with_random_tokens_leaves_a_revocation_under_two_seconds() {
    let app = spawn_with(TestDb::sqlite(), |config| config.refreshes_per_ip_per_minute = 0).await;
    let player = app.new_player().await;
    let stop = stop_flag();
    let mut flooders = Vec::new();
    for _ in 0..16 {
        let (url, stop) = (app.url("/api/auth/refresh"), stop.clone());
        let client = client_from("127.0.0.7");
        flooders.push(tokio::spawn(async move {
            let mut sent = 0u32;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 5000 && Instant::now() < deadline
            {
                let token = uuid::Uuid::new_v4().simple().to_string();
                let response = client.post(&url).json(&json!({"refresh_token": token})).send().await;
                assert!(response.is_ok_and(|r| r.status() == 401));
                sent += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoking = Instant::now();
    let answered = app.post_auth("/api/auth/logout", &player.access_token, None).await;
    let took = revoking.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(answered.status(), 204);
    let mut sent = 0;
    for flooder in flooders {
        sent += flooder.await.unwrap();
    }
    eprintln!("logout answered in {took:?} during a flood of {sent} random refreshes");
    assert!(took < Duration::from_secs(2), "the revocation took {took:?}");
}

fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_are_limited_per_address() {
    let app = spawn_with(TestDb::sqlite(), |config| config.refreshes_per_ip_per_minute = 3).await;
    for _ in 0..3 {
        expect_error(app.refresh("nonsense").await, 401, "invalid_refresh_token").await;
    }
    let limited = app.refresh("nonsense").await;
    assert!(limited.headers().contains_key("retry-after"));
    expect_error(limited, 429, "rate_limited").await;
    let elsewhere = client_from("127.0.0.9");
    let response =
        elsewhere.post(app.url("/api/auth/refresh")).json(&json!({"refresh_token": "x"})).send().await;
    assert_eq!(response.unwrap().status(), 401);
}

async fn failed_login_with(app: &TestApp, forwarded_for: &str, username: &str) -> u16 {
    app.http
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"username": username, "password": "wrong password"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let app = spawn_with(TestDb::sqlite(), |config| config.auth_per_username_per_minute = 2).await;
    let name = unique_name("p");
    assert_eq!(failed_login_with(&app, "198.51.100.1", &name).await, 401);
    assert_eq!(failed_login_with(&app, "198.51.100.2", &name).await, 401);
    assert_eq!(failed_login_with(&app, "198.51.100.3", &name).await, 429, "all count as the peer");
    let player = app.new_player().await;
    let cookie = login_cookie(&app, &player.username, Some("https")).await;
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_counts_apart_and_ipv6_by_its_64() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.auth_per_username_per_minute = 2;
        config.trusted_proxies = vec![tether::client_ip::parse_net("127.0.0.1").unwrap()];
    })
    .await;
    let name = unique_name("p");
    assert_eq!(failed_login_with(&app, "198.51.100.1", &name).await, 401);
    assert_eq!(failed_login_with(&app, "6.6.6.6, 198.51.100.1", &name).await, 401);
    assert_eq!(failed_login_with(&app, "198.51.100.1", &name).await, 429);
    assert_eq!(failed_login_with(&app, "198.51.100.2", &name).await, 401, "another client");
    // A client walking its /64 is one client.
    assert_eq!(failed_login_with(&app, "2001:db8:1:2::1", &name).await, 401);
    assert_eq!(failed_login_with(&app, "2001:db8:1:2::2", &name).await, 401);
    assert_eq!(failed_login_with(&app, "2001:db8:1:2:ffff::3", &name).await, 429);
    assert_eq!(failed_login_with(&app, "2001:db8:1:3::1", &name).await, 401);
    // X-Forwarded-Proto is believed from the proxy.
    let player = app.new_player().await;
    let cookie = login_cookie(&app, &player.username, Some("https")).await;
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(!login_cookie(&app, &player.username, None).await.contains("Secure"));
}

async fn login_cookie(app: &TestApp, username: &str, proto: Option<&str>) -> String {
    let mut request = app.http.post(app.url("/api/auth/login"));
    if let Some(proto) = proto {
        request = request.header("x-forwarded-proto", proto);
    }
    let response = request.json(&json!({"username": username, "password": PASSWORD})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_past_the_per_session_cap_is_closed_1008_too_many_sockets() {
    let app = spawn_with(TestDb::sqlite(), |config| config.max_sockets_per_session = 2).await;
    let player = app.new_player().await;
    let first = app.connect_ws(&player.access_token).await;
    let _second = app.connect_ws(&player.access_token).await;
    let mut third = app.ws_with(&[("authorization", &format!("Bearer {}", player.access_token))], "").await;
    let closed = third.next_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (1008, "too many sockets"));
    assert_eq!(app.open_sockets(&player.session_id), 2);
    // Another session of the same user has its own count.
    let other = app.login(&player.username).await;
    let _elsewhere = app.connect_ws(&other.access_token).await;
    // A place freed is a place again.
    drop(first);
    let deadline = Instant::now() + WAIT;
    while app.open_sockets(&player.session_id) > 1 {
        assert!(Instant::now() < deadline, "the closed socket stayed registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _again = app.connect_ws(&player.access_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_timeout_applies_to_an_upgraded_socket() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.header_timeout = Duration::from_millis(500);
        config.idle_timeout = Duration::from_millis(500);
        config.body_timeout = Duration::from_millis(500);
    })
    .await;
    let player = app.new_player().await;
    let mut ws = app.connect_ws(&player.access_token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send_json(json!({"type": "ping", "t": 7})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
    // While an idle keep-alive connection is closed.
    let mut idle = tcp_from("127.0.0.10", app.addr).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 12];
    idle.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, Duration::from_secs(2)).await, "the idle connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_counts_only_toward_the_total_connection_cap() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.max_connections_per_ip = 2;
        // Seven: the readiness check's keep-alive connection holds one of them.
        config.max_connections = 7;
        config.trusted_proxies = vec![tether::client_ip::parse_net("127.0.0.11").unwrap()];
    })
    .await;
    // Five connections from the proxy: past the per-address cap, within the total.
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut tcp = tcp_from("127.0.0.11", app.addr).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(tcp);
    }
    // The last place; one more connection, from anyone, is refused.
    let mut sixth = tcp_from("127.0.0.12", app.addr).await;
    sixth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(WAIT, sixth.read_exact(&mut buf)).await.unwrap().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.13:0".parse().unwrap()).unwrap();
    if let Ok(mut seventh) = tokio::time::timeout(WAIT, socket.connect(app.addr)).await.expect("in time") {
        let _ = seventh.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let answer = tokio::time::timeout(Duration::from_secs(2), seventh.read(&mut buf)).await;
        assert!(matches!(answer, Ok(Ok(0) | Err(_))), "past the total cap: {answer:?}");
    }
}
