//! Focused regressions for the edges of revocation that the fault-injection
//! history (`history.rs`) runs into: a revoke-all larger than a follower's batch,
//! clients that hang up right after a revoking call, two processes with one node
//! id, the close code of a session revoked by a ban, and a ban's `until` given
//! with an offset. Each is written against the contract (API.md v2); an older
//! server fails some of them, which is what they are for.

use futures_util::{StreamExt as _, stream};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tether_e2e::chaos::{raw_request, send_and_reset};
use tether_e2e::nodes::{self, Node};
use tether_e2e::*;
use tokio::time::Instant;

/// The contract's propagation bound (2 s) and what a busy two-core test machine may
/// add to it (0.5 s: three servers, PostgreSQL and the test's own tasks).
const BOUND: Duration = Duration::from_millis(2500);

/// A session as a client holds it.
#[derive(Clone, Debug)]
struct Held {
    session_id: String,
    access_token: String,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

async fn register(http: &reqwest::Client, base: &str, name: &str) {
    let body = json!({"username": name, "password": PASSWORD});
    let response = http.post(format!("{base}/api/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "register {name} on {base}");
}

async fn login(http: &reqwest::Client, base: &str, name: &str) -> Held {
    let body = json!({"username": name, "password": PASSWORD});
    let response = http.post(format!("{base}/api/auth/login")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "login of {name} on {base}");
    let body: Value = response.json().await.unwrap();
    Held {
        session_id: body["session_id"].as_str().unwrap().to_owned(),
        access_token: body["access_token"].as_str().unwrap().to_owned(),
    }
}

/// `users` players registered on `bases[0]`, `per_user` sessions each, logged in
/// round-robin on `bases`, 16 at a time.
async fn many_sessions(http: &reqwest::Client, bases: &[String], users: usize, per_user: usize) -> Vec<Held> {
    let prefix = unique_name("m");
    let names: Vec<String> = (0..users).map(|n| format!("{prefix}{n}")).collect();
    stream::iter(&names).for_each_concurrent(8, |name| register(http, &bases[0], name)).await;
    let logins = (0..users * per_user).map(|n| (bases[n % bases.len()].clone(), names[n % users].clone()));
    stream::iter(logins)
        .map(|(base, name)| async move { login(http, &base, &name).await })
        .buffer_unordered(16)
        .collect()
        .await
}

/// An upgrade with `token` that the server refuses: the close code it answers with.
async fn refused_upgrade(addr: &str, token: &str) -> Closed {
    upgrade_at(addr, token).await.next_close().await
}

/// Waits, for every session, until `base` answers its token with 401; returns the
/// sessions it still accepted in a request sent after `deadline` (each with the
/// status), or whose probe could not even be sent in time.
async fn still_accepted(http: &reqwest::Client, base: &str, held: &[Held], deadline: Instant) -> Vec<String> {
    let probes = held.iter().map(|session| async move {
        loop {
            let sent = Instant::now();
            let status =
                match http.get(format!("{base}/api/me")).bearer_auth(&session.access_token).send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
            if status == 401 {
                return None;
            }
            if sent > deadline {
                return Some(format!("{} ({status})", &session.session_id[..8]));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    stream::iter(probes).buffer_unordered(32).filter_map(|late| async move { late }).collect().await
}

/// How many of `sockets` have not had their close frame by `deadline`, and the
/// close codes of those that did.
async fn unclosed(sockets: Vec<WsClient>, deadline: Instant) -> (usize, Vec<u16>) {
    let waits = sockets.into_iter().map(|mut socket| async move {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, async {
            loop {
                match socket.stream.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                        return frame.map(|f| u16::from(f.code));
                    }
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
    });
    let ends: Vec<_> = stream::iter(waits).buffer_unordered(256).collect().await;
    let open = ends.iter().filter(|end| end.is_err()).count();
    let codes = ends.into_iter().filter_map(|end| end.ok().flatten()).collect();
    (open, codes)
}

/// PostgreSQL nodes with these node ids (repeats allowed), the batch size given.
async fn pg_nodes(test: &str, ids: &[&str], batch: Option<&str>) -> Option<(Arc<TestDb>, Vec<Node>)> {
    let db = TestDb::postgres(test).await?;
    nodes::prepare_database(&db.url, &["radmin"], PASSWORD).await;
    let secret = nodes::secret_file(&db);
    let mut started = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let mut env = nodes::serve_env(&db.url, &secret, id);
        if let Some(batch) = batch {
            nodes::set_env(&mut env, "TETHER_REVOCATION_BATCH_SIZE", batch);
        }
        started.push(Node::start(&format!("{id}#{n}"), env, None).await);
    }
    Some((db, started))
}

fn base(node: &Node) -> String {
    node.base().expect("the node runs")
}

fn addr(node: &Node) -> String {
    node.addr().expect("the node runs")
}

/// Revoke-all on the first node; every other node must refuse each session and
/// close each socket within the bound.
async fn revoke_all_reaches_every_node(nodes: &[Node], users: usize, per_user: usize, sockets: usize) {
    let _alone = HEAVY.lock().await;
    let http = http();
    let bases: Vec<String> = nodes.iter().map(base).collect();
    let held = many_sessions(&http, &bases, users, per_user).await;
    let mut open = Vec::new();
    for (n, session) in held.iter().take(sockets).enumerate() {
        open.push(connect_ws_at(&addr(&nodes[1 + n % (nodes.len() - 1)]), &session.access_token).await);
    }
    let admin = login(&http, &bases[0], "radmin").await;
    let answer = http
        .post(format!("{}/api/admin/revoke-all", bases[0]))
        .bearer_auth(&admin.access_token)
        .json(&json!({"reason": "everyone out"}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + BOUND;
    assert_eq!(answer.status(), 200);
    let counts: Value = answer.json().await.unwrap();
    assert!(counts["sessions_revoked"].as_u64() >= Some(held.len() as u64), "{counts}");

    let (still_open, codes) = unclosed(open, deadline).await;
    let mut failures = Vec::new();
    if still_open > 0 {
        failures.push(format!(
            "{still_open} of {sockets} sockets on the other nodes were not closed within {BOUND:?}"
        ));
    }
    if codes.iter().any(|&code| code != 4001) {
        failures.push(format!("close codes other than 4001: {codes:?}"));
    }
    for (node, base) in nodes.iter().zip(&bases).skip(1) {
        let late = still_accepted(&http, base, &held, deadline).await;
        if !late.is_empty() {
            failures.push(format!(
                "{} still accepted {} of {} revoked sessions after {BOUND:?}, e.g. {:?}",
                node.name,
                late.len(),
                held.len(),
                &late[..late.len().min(8)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "a revoke-all of {} sessions answered by {}:\n{}",
        held.len(),
        nodes[0].name,
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_all_many_times_the_batch_size_is_refused_by_every_other_node_within_two_seconds() {
    let ids = ["batch-a", "batch-b", "batch-c"];
    let Some((_db, nodes)) = pg_nodes("revoke_all_batches", &ids, Some("7")).await else { return };
    revoke_all_reaches_every_node(&nodes, 10, 10, 30).await;
}

/// "Whatever its size": more sessions in one revocation than a follower reads at once
/// by default (2000 in the first cluster release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_all_larger_than_the_default_batch_is_refused_by_every_other_node_within_two_seconds() {
    let ids = ["big-a", "big-b", "big-c"];
    let Some((_db, nodes)) = pg_nodes("revoke_all_big", &ids, None).await else { return };
    revoke_all_reaches_every_node(&nodes, 42, 50, 30).await;
}

/// 200 sessions, each with a socket; each sends its logout and resets the connection
/// at once. The kernel discards what a reset connection had not yet delivered, so some
/// logouts never reach the server at all; what must hold is that none is half done: a
/// session the database calls revoked (as a restart shows) is refused by the running
/// server too and its socket got 4001, and a session still live in the database kept
/// its socket. Before the revocation ran in a task of its own, and before writes were
/// spawned the moment hyper handed them over, most logouts stopped between the two.
async fn hung_up_logouts_still_revoke(db: Arc<TestDb>) {
    let _alone = HEAVY.lock().await;
    nodes::prepare_database(&db.url, &[], PASSWORD).await;
    let env = nodes::serve_env(&db.url, &nodes::secret_file(&db), "hang-up");
    let node = Node::start("hang-up", env, None).await;
    let (http, base, addr) = (http(), base(&node), addr(&node));
    let held = many_sessions(&http, std::slice::from_ref(&base), 20, 10).await;
    let mut sockets = Vec::new();
    for session in &held {
        sockets.push(connect_ws_at(&addr, &session.access_token).await);
    }
    let hang_ups = held.iter().map(|session| {
        let request = raw_request("POST", "/api/auth/logout", &addr, &session.access_token, None);
        let addr = addr.clone();
        async move { send_and_reset(&addr, request.as_bytes()).await }
    });
    let sent: Vec<_> = stream::iter(hang_ups).buffer_unordered(50).collect().await;
    assert!(sent.iter().all(Result::is_ok), "every request was written: {sent:?}");
    let deadline = Instant::now() + BOUND;

    // In session order: each socket's close code, or None if it was still open at the deadline.
    let ends: Vec<Option<u16>> = stream::iter(sockets.into_iter().map(|mut socket| async move {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, async {
            loop {
                match socket.stream.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                        return frame.map_or(1005, |f| u16::from(f.code));
                    }
                    Some(Ok(_)) => continue,
                    _ => return 1006,
                }
            }
        })
        .await
        .ok()
    }))
    .buffered(256)
    .collect()
    .await;
    let refused_here = refused(&http, &base, &held).await;
    // Memory is marked before the commit: a kill while commits are still queued may
    // lose what no client was told (the contract allows it). Judge what the server
    // carried out once it has finished: nothing in flight, then kill -9.
    let settled = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let in_flight = metrics
            .lines()
            .find_map(|line| line.strip_prefix("tether_revocations_in_flight "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        if in_flight == Some(0.0) {
            break;
        }
        assert!(Instant::now() < settled, "revocations still in flight after 20 s: {in_flight:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.kill().await;
    node.spawn().await.expect("the node starts again on the same database");
    let refused_after_restart = refused(&http, &node.base().expect("restarted"), &held).await;

    let mut half_done = Vec::new();
    for (index, session) in held.iter().enumerate() {
        let (here, stored, end) = (refused_here[index], refused_after_restart[index], ends[index]);
        let socket_agrees = if stored { end == Some(4001) } else { end.is_none() };
        if here != stored || !socket_agrees {
            half_done.push(format!(
                "{}: refused by the running server {here}, after a restart {stored}, socket {end:?}",
                &session.session_id[..8]
            ));
        }
    }
    let revoked = refused_after_restart.iter().filter(|&&refused| refused).count();
    eprintln!("{revoked} of {} hung-up logouts reached the server and were carried out", held.len());
    assert!(revoked > 0, "no logout reached the server: the test proves nothing");
    assert!(
        half_done.is_empty(),
        "{} of {} hung-up logouts were half done:\n{}",
        half_done.len(),
        held.len(),
        half_done.join("\n")
    );
}

/// For each session, in order: is its access token refused (401) on this node?
async fn refused(http: &reqwest::Client, base: &str, held: &[Held]) -> Vec<bool> {
    stream::iter(held.iter().map(|session| async move {
        let answer = http.get(format!("{base}/api/me")).bearer_auth(&session.access_token).send().await;
        answer.expect("the node answers").status() == 401
    }))
    .buffered(32)
    .collect()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_whose_clients_hang_up_after_sending_still_revoke_on_sqlite() {
    hung_up_logouts_still_revoke(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_whose_clients_hang_up_after_sending_still_revoke_on_postgres() {
    let Some(db) = TestDb::postgres("hang_up_logouts").await else { return };
    hung_up_logouts_still_revoke(db).await;
}

/// "Two nodes with the same id must still not skip each other's revocations."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_node_id_apply_each_others_revocations() {
    let Some((_db, nodes)) = pg_nodes("same_node_id", &["twin", "twin"], None).await else { return };
    let http = http();
    let (a, b) = (&nodes[0], &nodes[1]);
    let name = unique_name("t");
    register(&http, &base(a), &name).await;
    let admin = login(&http, &base(b), "radmin").await;

    // A logout answered by A closes the socket on B and is refused there.
    let first = login(&http, &base(a), &name).await;
    let on_b = connect_ws_at(&addr(b), &first.access_token).await;
    let logout = http.post(format!("{}/api/auth/logout", base(a))).bearer_auth(&first.access_token).send();
    assert_eq!(logout.await.unwrap().status(), 204);
    let deadline = Instant::now() + BOUND;
    let (open, codes) = unclosed(vec![on_b], deadline).await;
    let late = still_accepted(&http, &base(b), std::slice::from_ref(&first), deadline).await;

    // And the other way round: an admin revoke answered by B closes the socket on A.
    let second = login(&http, &base(b), &name).await;
    let on_a = connect_ws_at(&addr(a), &second.access_token).await;
    let revoke = http
        .post(format!("{}/api/admin/sessions/{}/revoke", base(b), second.session_id))
        .bearer_auth(&admin.access_token)
        .json(&json!({"reason": "twin"}))
        .send();
    assert_eq!(revoke.await.unwrap().status(), 200);
    let deadline = Instant::now() + BOUND;
    let (open_back, codes_back) = unclosed(vec![on_a], deadline).await;
    let late_back = still_accepted(&http, &base(a), std::slice::from_ref(&second), deadline).await;

    assert!(
        open == 0 && late.is_empty() && open_back == 0 && late_back.is_empty(),
        "two processes both named \"twin\": A's logout: socket on B open={open} codes={codes:?}, B still \
         accepts {late:?}; B's admin revoke: socket on A open={open_back} codes={codes_back:?}, A still accepts \
         {late_back:?} (after {BOUND:?})"
    );
}

// --- bans: the close code, and `until` with an offset ----------------------------

async fn ban(app: &TestApp, admin: &Login, player: &Login, until: Option<&str>) -> reqwest::Response {
    let path = format!("/api/admin/users/{}/ban", player.user_id);
    let mut body = json!({"reason": "cheating"});
    if let Some(until) = until {
        body["until"] = json!(until);
    }
    app.post_auth(&path, &admin.access_token, Some(body)).await
}

async fn unban(app: &TestApp, admin: &Login, player: &Login) -> reqwest::Response {
    let path = format!("/api/admin/users/{}/ban", player.user_id);
    app.http.delete(app.url(&path)).bearer_auth(&admin.access_token).send().await.unwrap()
}

async fn login_answer(app: &TestApp, username: &str) -> reqwest::Response {
    app.post_json("/api/auth/login", json!({"username": username, "password": PASSWORD})).await
}

async fn upgrade_close(app: &TestApp, token: &str) -> u16 {
    refused_upgrade(&app.addr.to_string(), token).await.code
}

/// Polls the login until it is no longer refused as banned, for at most `bound`.
async fn login_until_allowed(app: &TestApp, username: &str, bound: Duration) -> u16 {
    let deadline = Instant::now() + bound;
    loop {
        let status = login_answer(app, username).await.status().as_u16();
        if status != 403 || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_backends! {
    async fn a_session_revoked_by_a_ban_closes_4003_while_banned_and_4001_once_unbanned(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        assert_eq!(ban(&app, &admin, &player, None).await.status(), 200);
        assert_eq!(upgrade_close(&app, &player.access_token).await, 4003, "banned");
        expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
        expect_error(app.refresh(&player.refresh_token).await, 403, "banned").await;

        assert_eq!(unban(&app, &admin, &player).await.status(), 204);
        let after_unban = upgrade_close(&app, &player.access_token).await;
        expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
        let refresh = app.refresh(&player.refresh_token).await;
        let refresh = (refresh.status().as_u16(), refresh.json::<Value>().await.unwrap_or(Value::Null));
        assert_eq!(
            (after_unban, refresh.0, refresh.1["error"].as_str()),
            (4001, 401, Some("session_revoked")),
            "once unbanned, a session the ban revoked is an ordinary revoked session (close 4001, refresh 401 \
             session_revoked); got close {after_unban} and refresh {refresh:?}"
        );
        assert_eq!(login_answer(&app, &player.username).await.status(), 200);
    }
}

on_both_backends! {
    async fn a_session_revoked_by_a_ban_closes_4001_once_the_bans_until_has_passed(db) {
        let app = spawn_with(db, |_| {}).await;
        let admin = app.new_admin().await;
        let player = app.new_player().await;
        let until = (time::OffsetDateTime::now_utc() + Duration::from_secs(2)).replace_nanosecond(0).unwrap();
        let until_text = until.format(&time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(ban(&app, &admin, &player, Some(&until_text)).await.status(), 200);
        assert_eq!(upgrade_close(&app, &player.access_token).await, 4003, "banned until {until_text}");
        assert_eq!(login_until_allowed(&app, &player.username, Duration::from_secs(6)).await, 200, "the ban lifts");
        assert_eq!(upgrade_close(&app, &player.access_token).await, 4001, "the ban's until has passed");
    }
}

/// `until` written in another offset names the same instant, and is answered in UTC.
async fn until_in_offset(
    app: &TestApp,
    from_now: Duration,
    offset_minutes: i32,
) -> (Login, time::OffsetDateTime, String) {
    use time::format_description::well_known::Rfc3339;
    let admin = app.new_admin().await;
    let player = app.new_player().await;
    let instant = (time::OffsetDateTime::now_utc() + from_now).replace_nanosecond(0).unwrap();
    let offset = time::UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
    let written = instant.to_offset(offset).format(&Rfc3339).unwrap();
    let response = ban(app, &admin, &player, Some(&written)).await;
    assert_eq!(response.status(), 200, "ban until {written}: {:?}", response.text().await);
    (player, instant, written)
}

on_both_backends! {
    async fn a_ban_until_written_at_minus_ten_hours_is_in_force_and_answered_as_the_same_utc_instant(db) {
        use time::format_description::well_known::Rfc3339;
        let app = spawn_with(db, |_| {}).await;
        // Two hours from now, written as local time at -10:00: as text it reads eight
        // hours ago, so a text comparison would have lifted it already.
        let (player, instant, written) = until_in_offset(&app, Duration::from_secs(2 * 3600), -600).await;
        let refused = login_answer(&app, &player.username).await;
        let status = refused.status();
        let body: Value = refused.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (403, Some("banned")),
            "a ban until {written} (= {}) must refuse the login now",
            instant.format(&Rfc3339).unwrap()
        );
        let answered = body["until"].as_str().unwrap_or("<none>");
        let parsed = time::OffsetDateTime::parse(answered, &Rfc3339).ok();
        assert!(
            parsed == Some(instant) && (answered.ends_with('Z') || answered.ends_with("+00:00")),
            "until was given as {written} (= {}); the 403 answered until {answered}",
            instant.format(&Rfc3339).unwrap()
        );
    }
}

on_both_backends! {
    async fn a_ban_until_written_at_plus_five_thirty_lifts_at_that_instant(db) {
        let app = spawn_with(db, |_| {}).await;
        // Two seconds from now at +05:30: as text it reads five and a half hours ahead.
        let (player, instant, written) = until_in_offset(&app, Duration::from_secs(2), 330).await;
        assert_eq!(login_answer(&app, &player.username).await.status(), 403, "banned until {written}");
        let status = login_until_allowed(&app, &player.username, Duration::from_secs(6)).await;
        let utc = instant.format(&time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(status, 200, "a ban until {written} (= {utc}) still refused the login 4 s after it");
    }
}
