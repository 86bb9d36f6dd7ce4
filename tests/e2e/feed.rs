//! The revocation feed other services follow: the snapshot, the stream, and resuming
//! it by `Last-Event-ID` across restarts and nodes with every event exactly once.

use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use tether::store::SessionRecord;
use tether_e2e::services::{Credential, SseEvent, Stream, service_credential, sids};
use tether_e2e::*;

/// The contract's propagation bound across nodes.
const ACROSS_NODES: Duration = Duration::from_secs(2);

async fn snapshot(app: &TestApp, credential: &Credential) -> Value {
    let response = app
        .http
        .get(app.url("/api/auth/revocations/snapshot"))
        .basic_auth(&credential.client_id, Some(&credential.client_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn snapshot_sids(snapshot: &Value) -> HashSet<String> {
    snapshot["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["sid"].as_str().unwrap().to_owned())
        .collect()
}

/// A session of `user_id` straight in the store, with its own lifetime.
async fn session_lasting(app: &TestApp, user_id: &str, lifetime: Duration) -> String {
    let session =
        SessionRecord::new_live(user_id.parse().unwrap(), tether::store::now(), lifetime, None, None);
    app.state.store.create_session(&session, uuid::Uuid::new_v4().as_bytes()).await.unwrap();
    session.id.to_string()
}

async fn admin_revoke(app: &TestApp, admin: &Login, sid: &str) {
    let reason = Some(serde_json::json!({"reason": "feed test"}));
    let response =
        app.post_auth(&format!("/api/admin/sessions/{sid}/revoke"), &admin.access_token, reason).await;
    assert_eq!(response.status(), 200, "revoke {sid}");
}

on_both_backends! {
    async fn a_consumer_gets_each_revoked_session_once_in_log_order(db) {
        let app = spawn_with(db, |_| {}).await;
        let shop = service_credential(&app, "shop").await;
        let mut stream = Stream::open(&app.base, &shop, None, false).await;
        let (alone, twice) = (app.new_player().await, app.new_player().await);
        let again = app.login(&twice.username).await;
        let admin = app.new_admin().await;
        assert_eq!(app.post_auth("/api/auth/logout", &alone.access_token, None).await.status(), 204);
        let kicked = app
            .post_auth(&format!("/api/admin/users/{}/kick", twice.user_id), &admin.access_token, Some(serde_json::json!({"reason": "test"})))
            .await;
        assert_eq!(kicked.status(), 200);

        let events = stream.take(3).await;
        assert_eq!(sids(&events)[0], alone.session_id);
        let kicked_sids: HashSet<String> = sids(&events)[1..].iter().cloned().collect();
        assert_eq!(kicked_sids, HashSet::from([twice.session_id.clone(), again.session_id.clone()]));
        let kinds: Vec<&str> = events.iter().map(|event| event.data["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["logout", "kick", "kick"]);
        for event in &events {
            assert!(event.data["sub"].as_str().is_some());
            for time in ["at", "session_expires_at"] {
                time::OffsetDateTime::parse(event.data[time].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
            }
            let id = event.id.as_deref().expect("every event has an id");
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "URL-safe: {id}");
        }
        let ids: HashSet<_> = events.iter().map(|event| event.id.clone()).collect();
        assert_eq!(ids.len(), 3, "each event its own cursor");
        app.stop().await;
    }
}

on_both_backends! {
    async fn the_snapshot_lists_exactly_the_revoked_sessions_still_alive(db) {
        let app = spawn_with(db, |_| {}).await;
        let shop = service_credential(&app, "shop").await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let short = session_lasting(&app, &player.user_id, Duration::from_secs(2)).await;
        let revoked = session_lasting(&app, &player.user_id, Duration::from_secs(3600)).await;
        let live = session_lasting(&app, &player.user_id, Duration::from_secs(3600)).await;
        admin_revoke(&app, &admin, &short).await;
        admin_revoke(&app, &admin, &revoked).await;
        assert_eq!(snapshot_sids(&snapshot(&app, &shop).await), HashSet::from([short.clone(), revoked.clone()]));

        // Once its lifetime is over, a revoked session is no one's concern.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let taken = loop {
            let taken = snapshot(&app, &shop).await;
            if !snapshot_sids(&taken).contains(&short) {
                break taken;
            }
            assert!(tokio::time::Instant::now() < deadline, "an ended session stayed in the snapshot");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(snapshot_sids(&taken), HashSet::from([revoked.clone()]));
        let entry = &taken["revoked"][0];
        assert_eq!((entry["sub"].as_str(), entry["kind"].as_str()), (Some(player.user_id.as_str()), Some("admin_revoke")));

        // The stream from the snapshot's cursor starts right after it.
        let mut stream = Stream::open(&app.base, &shop, taken["cursor"].as_str(), true).await;
        admin_revoke(&app, &admin, &live).await;
        assert_eq!(sids(&stream.take(1).await), [live]);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_after_a_restart_delivers_every_event_once() {
    let db = TestDb::sqlite();
    let app = spawn_with(db.clone(), |_| {}).await;
    let shop = service_credential(&app, "shop").await;
    let players =
        [app.new_player().await, app.new_player().await, app.new_player().await, app.new_player().await];
    let mut stream = Stream::open(&app.base, &shop, None, false).await;
    for player in &players[..2] {
        assert_eq!(app.post_auth("/api/auth/logout", &player.access_token, None).await.status(), 204);
    }
    let first = stream.take(2).await;
    drop(stream);
    app.stop().await;

    let app = spawn_with(db, |_| {}).await;
    for player in &players[2..] {
        // A token issued before the restart still works, and its logout is an event.
        assert_eq!(app.post_auth("/api/auth/logout", &player.access_token, None).await.status(), 204);
    }
    // Resume after the first event: the second, then the two made after the restart.
    let mut resumed = Stream::open(&app.base, &shop, first[0].id.as_deref(), true).await;
    let rest = resumed.take(3).await;
    let expected: Vec<String> = players[1..].iter().map(|player| player.session_id.clone()).collect();
    assert_eq!(sids(&rest), expected);
    assert_eq!(rest[0].id, first[1].id, "the same event has the same id after a restart");
    // Nothing more is owed: the next event is the next revocation.
    let later = app.new_player().await;
    assert_eq!(app.post_auth("/api/auth/logout", &later.access_token, None).await.status(), 204);
    assert_eq!(sids(&resumed.take(1).await), [later.session_id]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_the_log_never_gave_or_no_longer_keeps_gets_reset() {
    let db = TestDb::sqlite();
    let app = spawn_with(db.clone(), |_| {}).await;
    let shop = service_credential(&app, "shop").await;
    let admin = app.new_admin().await;

    let garbage = Stream::request(&app.base, &shop, Some("not-a-cursor"), true).await;
    expect_error(garbage, 400, "invalid_request").await;

    let before = snapshot(&app, &shop).await["cursor"].as_str().unwrap().to_owned();
    let player = app.new_player().await;
    let short = session_lasting(&app, &player.user_id, Duration::from_secs(1)).await;
    admin_revoke(&app, &admin, &short).await;
    admin_revoke(&app, &admin, &player.session_id).await;
    let mut stream = Stream::open(&app.base, &shop, Some(&before), true).await;
    let events = stream.take(2).await;
    drop(stream);

    // A cursor from the future is one the log never gave.
    let (seq, session) = events[1].id.as_deref().unwrap().split_once('-').unwrap();
    let future = format!("{}-{session}", seq.parse::<i64>().unwrap() + 100);
    let mut never_given = Stream::open(&app.base, &shop, Some(&future), false).await;
    assert_reset(&mut never_given).await;

    // Once the short session has ended, its event may go: a restart prunes the log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while snapshot_sids(&snapshot(&app, &shop).await).contains(&short) {
        assert!(tokio::time::Instant::now() < deadline, "the short session never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
    let app = spawn_with(db, |_| {}).await;
    let mut too_old = Stream::open(&app.base, &shop, Some(&before), true).await;
    assert_reset(&mut too_old).await;
    // The newer cursor still resumes: the live session's event was kept.
    let mut kept = Stream::open(&app.base, &shop, events[0].id.as_deref(), true).await;
    assert_eq!(sids(&kept.take(1).await), [player.session_id]);
    app.stop().await;
}

async fn assert_reset(stream: &mut Stream) {
    let event: SseEvent = stream.next().await;
    assert_eq!((event.event.as_str(), &event.data), ("reset", &serde_json::json!({})));
    assert!(stream.ends_within(WAIT).await, "the stream ends after reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_another_node_misses_nothing_and_gets_nothing_twice() {
    let Some(db) = TestDb::postgres("feed::across_nodes").await else { return };
    let (a, b) = (spawn_with(db.clone(), |_| {}).await, spawn_with(db.clone(), |_| {}).await);
    let shop = service_credential(&a, "shop").await;
    tether::services::load(&b.state).await.unwrap();
    let mut on_b = Stream::open(&b.base, &shop, None, false).await;
    let mut on_a = Stream::open(&a.base, &shop, None, false).await;

    let players = [a.new_player().await, a.new_player().await, a.new_player().await, a.new_player().await];
    let answered = tokio::time::Instant::now();
    assert_eq!(a.post_auth("/api/auth/logout", &players[0].access_token, None).await.status(), 204);
    let event = on_b.next_within(ACROSS_NODES).await.expect("the stream on B goes on");
    assert!(answered.elapsed() < ACROSS_NODES + Duration::from_millis(500));
    assert_eq!(sids(&[event]), [players[0].session_id.clone()]);

    // Read two events on A, switch to B with the last id, and get the rest once.
    for player in &players[1..] {
        assert_eq!(a.post_auth("/api/auth/logout", &player.access_token, None).await.status(), 204);
    }
    let on_a_events = on_a.take(2).await;
    assert_eq!(sids(&on_a_events), [players[0].session_id.clone(), players[1].session_id.clone()]);
    drop(on_a);
    let mut switched = Stream::open(&b.base, &shop, on_a_events[1].id.as_deref(), true).await;
    let rest = switched.take(2).await;
    assert_eq!(sids(&rest), [players[2].session_id.clone(), players[3].session_id.clone()]);
    let later = b.new_player().await;
    assert_eq!(b.post_auth("/api/auth/logout", &later.access_token, None).await.status(), 204);
    assert_eq!(sids(&switched.take(1).await), [later.session_id], "nothing sent twice in between");
    a.stop().await;
    b.stop().await;
}

/// A revoke-all of this many sessions must reach a consumer whole.
const MASS: usize = 10_000;

/// [`MASS`] live sessions of `user`, written in one transaction (logins would cost
/// minutes of password hashing).
async fn mass_sessions(app: &TestApp, user: uuid::Uuid) -> Vec<SessionRecord> {
    let sessions: Vec<(SessionRecord, [u8; 16])> = (0..MASS)
        .map(|_| {
            let record =
                SessionRecord::new_live(user, tether::store::now(), Duration::from_secs(3600), None, None);
            (record, *uuid::Uuid::new_v4().as_bytes())
        })
        .collect();
    app.state.store.create_sessions(sessions.iter().map(|(record, hash)| (record, &hash[..]))).await.unwrap();
    sessions.into_iter().map(|(record, _)| record).collect()
}

on_both_backends! {
    async fn a_ten_thousand_session_revoke_all_streams_completely(db) {
        let _heavy = HEAVY.lock().await;
        let app = spawn_with(db, |_| {}).await;
        let shop = service_credential(&app, "shop").await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let sessions = mass_sessions(&app, player.user_id.parse().unwrap()).await;
        let mut stream = Stream::open(&app.base, &shop, None, false).await;
        let response = app.post_auth("/api/admin/revoke-all", &admin.access_token, Some(serde_json::json!({"reason": "mass"}))).await;
        assert_eq!(response.status(), 200);
        let mut seen = HashSet::new();
        let mut previous_id: Option<String> = None;
        while seen.len() < MASS + 1 {
            let event = stream.next_within(Duration::from_secs(20)).await.expect("the stream goes on");
            assert_eq!(event.event, "revoked");
            assert!(seen.insert(event.data["sid"].as_str().unwrap().to_owned()), "an event twice");
            assert_ne!(event.id, previous_id);
            previous_id = event.id;
        }
        let expected: HashSet<String> = sessions
            .iter()
            .map(|record| record.id.to_string())
            .chain([player.session_id.clone()])
            .collect();
        assert_eq!(seen, expected, "every session of the revoke-all, the admin's own spared");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_cut_off_not_buffered_for() {
    let _heavy = HEAVY.lock().await;
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.revocation_stream_stall = Duration::from_secs(1);
        config.tcp_send_buffer_bytes = Some(4096);
    })
    .await;
    let shop = service_credential(&app, "shop").await;
    let admin = app.new_admin().await;
    let player = app.new_player().await;
    let user: uuid::Uuid = player.user_id.parse().unwrap();
    mass_sessions(&app, user).await;

    // A consumer with a tiny receive window that reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(app.addr).await.unwrap();
    let credentials = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", shop.client_id, shop.client_secret))
    };
    // `Connection: close`, so that a stream that ends also ends the connection.
    let request = format!(
        "GET /api/auth/revocations HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await.unwrap();
    // The stream starts "from now": wait for its headers, then stop reading.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut byte)).await;
        assert_eq!(read.expect("the stream's headers in time").unwrap(), 1, "the connection stays open");
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    let cut_before = cut_offs(&app).await;
    let response = app
        .post_auth("/api/admin/revoke-all", &admin.access_token, Some(serde_json::json!({"reason": "mass"})))
        .await;
    assert_eq!(response.status(), 200);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cut_offs(&app).await == cut_before {
        assert!(tokio::time::Instant::now() < deadline, "the stalled consumer was never cut off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reading now, it gets what was already queued, then the end: never all 10,000.
    let mut received = Vec::new();
    let drained = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut received),
    )
    .await;
    let text = String::from_utf8_lossy(&received);
    let events = text.matches("event: revoked").count();
    assert!(drained.is_ok(), "the cut-off stream never ended ({events} events read)");
    assert!(events < MASS, "a cut-off consumer got everything: it was buffered for");
    app.stop().await;
}

async fn cut_offs(app: &TestApp) -> f64 {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("tether_revocation_stream_cut_off_total "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// A node cut off from the log cannot vouch for sessions to other services either:
/// it answers introspection and the snapshot 503 (a bad token still gets its plain
/// answer), sends nothing on its streams, and once healed delivers what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_node_tells_services_not_ready_and_streams_what_it_missed_once_back() {
    use tether_e2e::nodes;
    use tether_e2e::services::introspect;
    let Some(db) = TestDb::postgres("feed_stale_node").await else { return };
    let (a, b) = nodes::node_and_cuttable_node(&db).await;
    let created = nodes::cli(
        ["service", "create", "--name", "shop", "--database-url", &db.url].map(str::to_owned).into(),
        None,
    )
    .await;
    let shop = Credential::from_printed(&created);
    let (base_a, base_b) = (a.base().unwrap(), b.base().unwrap());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();

    // The credential was made after B started: B takes it up at its next reread (2 s).
    let taken_up_by = tokio::time::Instant::now() + Duration::from_secs(5);
    while introspect(&http, &base_b, &shop, "not.a.token").await.status() != 200 {
        assert!(tokio::time::Instant::now() < taken_up_by, "node B never took up the credential");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login = register_and_login_at(&http, &base_a).await;
    let (token, sid) = (login.access_token.as_str(), login.session_id.as_str());
    let mut stream = Stream::open(&base_b, &shop, None, false).await;

    nodes::cut_until_stale(&b, &http).await;
    let logout = http.post(format!("{base_a}/api/auth/logout")).bearer_auth(token).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    // B never heard of the logout: it must not say the token is active.
    expect_error(introspect(&http, &base_b, &shop, token).await, 503, "not_ready").await;
    let garbage = introspect(&http, &base_b, &shop, "not.a.token").await;
    assert_eq!(garbage.json::<Value>().await.unwrap()["active"], false, "a bad token gets its answer first");
    let snapshot = http
        .get(format!("{base_b}/api/auth/revocations/snapshot"))
        .basic_auth(&shop.client_id, Some(&shop.client_secret))
        .send()
        .await
        .unwrap();
    expect_error(snapshot, 503, "not_ready").await;

    b.proxy.as_ref().unwrap().heal();
    let event = stream.next_within(Duration::from_secs(15)).await.expect("the stream survives the outage");
    assert_eq!(sids(&[event]), [sid.to_owned()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = introspect(&http, &base_b, &shop, token).await;
        if answer.status() == 200 {
            assert_eq!(answer.json::<Value>().await.unwrap()["active"], false, "the missed logout applied");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node B never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
