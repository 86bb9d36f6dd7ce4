//! The game over the authenticated socket: rooms, presence, snapshots, input
//! acknowledgement, chat, and bad game messages. Nothing here depends on the
//! database, so each test runs once, on SQLite.

use serde_json::{Value, json};
use std::time::Duration;
use tether_e2e::*;

/// A connected player who has joined `room`; returns the socket and `joined`.
async fn in_room(app: &TestApp, player: &Login, room: &str) -> (WsClient, Value) {
    let mut socket = app.connect_ws(&player.access_token).await;
    socket.send_json(json!({"type": "join", "room": room})).await;
    let joined = socket.next_of_type("joined").await;
    (socket, joined)
}

fn my_state(snapshot: &Value, me: u64) -> Option<Value> {
    snapshot["players"].as_array()?.iter().find(|p| p["id"] == me).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_the_lobby_tells_who_is_here_and_others_see_the_arrival() {
    let app = spawn_app().await;
    let alice = app.new_player().await;
    let bob = app.new_player().await;
    let mut a = app.connect_ws(&alice.access_token).await;
    a.send_json(json!({"type": "join"})).await;
    let joined = a.next_of_type("joined").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["capacity"], 32);
    assert_eq!(
        joined["world"],
        json!({"width": 800.0, "height": 600.0, "speed": 200.0, "tick_rate": 20, "pickup_radius": 20.0})
    );
    let alice_id = joined["you"].as_u64().unwrap();
    assert_eq!(joined["players"], json!([{"id": alice_id, "name": alice.username}]));

    let (_b, bob_joined) = in_room(&app, &bob, "lobby").await;
    let bob_id = bob_joined["you"].as_u64().unwrap();
    assert_eq!(bob_joined["players"].as_array().unwrap().len(), 2);
    let presence = a.next_of_type("presence").await;
    assert_eq!(
        presence,
        json!({"type": "presence", "room": "lobby", "event": "join", "player": {"id": bob_id, "name": bob.username}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_applied_by_the_server_and_acknowledged_in_snapshots() {
    let app = spawn_app().await;
    let alice = app.new_player().await;
    let (mut socket, joined) = in_room(&app, &alice, "arena").await;
    let me = joined["you"].as_u64().unwrap();
    let first = socket.next_of_type("snapshot").await;
    let start = my_state(&first, me).expect("I am in the snapshot");
    assert_eq!(first["items"].as_array().unwrap().len(), 8);
    assert!(first["tick"].as_u64().unwrap() >= 1);

    let dx = if start["x"].as_f64().unwrap() > 400.0 { -1 } else { 1 };
    for seq in 1..=3 {
        socket.send_json(json!({"type": "input", "seq": seq, "dx": dx, "dy": 0})).await;
    }
    let acked = socket
        .next_matching("acknowledging input 3", |m| {
            m["type"] == "snapshot" && my_state(m, me).is_some_and(|p| p["ack"] == 3)
        })
        .await;
    let now = my_state(&acked, me).unwrap();
    let moved = now["x"].as_f64().unwrap() - start["x"].as_f64().unwrap();
    assert!((moved - 30.0 * dx as f64).abs() < 0.2, "three ticks at 10 units each, moved {moved}");
    assert_eq!(now["y"], start["y"]);

    // An old sequence number is ignored: no movement, the ack stays.
    socket.send_json(json!({"type": "input", "seq": 2, "dx": dx, "dy": 0})).await;
    let later = socket
        .next_matching("a later snapshot", |m| {
            m["type"] == "snapshot" && m["tick"].as_u64() > acked["tick"].as_u64().map(|t| t + 2)
        })
        .await;
    assert_eq!(my_state(&later, me).unwrap(), now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_everyone_in_the_room_and_only_them() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (app.new_player().await, app.new_player().await, app.new_player().await);
    let (mut a, _) = in_room(&app, &alice, "tavern").await;
    let (mut b, _) = in_room(&app, &bob, "tavern").await;
    let (mut c, _) = in_room(&app, &carol, "lobby").await;
    let text = "hello <b>world</b> & friends";
    a.send_json(json!({"type": "chat", "text": text})).await;
    for socket in [&mut a, &mut b] {
        let chat = socket.next_of_type("chat").await;
        assert_eq!((chat["room"].as_str(), chat["text"].as_str()), (Some("tavern"), Some(text)));
        assert_eq!(chat["from"]["name"], alice.username.as_str());
        assert!(chat["at"].as_str().unwrap().ends_with('Z'));
    }
    c.send_json(json!({"type": "ping", "t": 1})).await;
    let next = c.next_matching("pong or chat", |m| m["type"] == "pong" || m["type"] == "chat").await;
    assert_eq!(next["type"], "pong", "the lobby did not hear the tavern");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_says_left_and_others_see_the_departure() {
    let app = spawn_app().await;
    let (alice, bob) = (app.new_player().await, app.new_player().await);
    let (mut a, _) = in_room(&app, &alice, "lobby").await;
    let (mut b, joined) = in_room(&app, &bob, "lobby").await;
    let bob_id = joined["you"].clone();
    a.next_of_type("presence").await;
    b.send_json(json!({"type": "leave"})).await;
    assert_eq!(b.next_of_type("left").await["room"], "lobby");
    let gone = a.next_matching("bob leaving", |m| m["type"] == "presence" && m["event"] == "leave").await;
    assert_eq!(gone["player"]["id"], bob_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_whose_socket_closes_leaves_the_room_and_others_are_told() {
    let app = spawn_app().await;
    let (alice, bob, carol, dave) =
        (app.new_player().await, app.new_player().await, app.new_player().await, app.new_player().await);
    let (mut a, alice_joined) = in_room(&app, &alice, "den").await;
    let alice_id = alice_joined["you"].clone();
    // Neither says `leave`: Bob's client closes the socket properly, Carol's
    // connection just goes away.
    for (player, closes_cleanly) in [(&bob, true), (&carol, false)] {
        let (mut socket, joined) = in_room(&app, player, "den").await;
        let id = joined["you"].clone();
        let arrived = a.next_of_type("presence").await;
        assert_eq!((arrived["event"].as_str(), &arrived["player"]["id"]), (Some("join"), &id));
        if closes_cleanly {
            socket.stream.close(None).await.expect("send a close frame");
        }
        drop(socket);
        let gone = a.next_of_type("presence").await;
        assert_eq!(
            gone,
            json!({"type": "presence", "room": "den", "event": "leave", "player": {"id": id, "name": player.username}}),
            "closes cleanly: {closes_cleanly}"
        );
    }
    let (_d, dave_joined) = in_room(&app, &dave, "den").await;
    let here =
        json!([{"id": alice_id, "name": alice.username}, {"id": dave_joined["you"], "name": dave.username}]);
    assert_eq!(dave_joined["players"], here, "the closed sockets' players are gone from the room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_game_messages_get_an_error_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let alice = app.new_player().await;
    let mut socket = app.connect_ws(&alice.access_token).await;
    socket.send_json(json!({"type": "input", "seq": 1, "dx": 1, "dy": 0})).await;
    assert_eq!(socket.next_of_type("error").await["code"], "not_in_room");
    socket.send_json(json!({"type": "chat", "text": "anyone?"})).await;
    assert_eq!(socket.next_of_type("error").await["code"], "not_in_room");
    socket.send_json(json!({"type": "leave"})).await;
    assert_eq!(socket.next_of_type("error").await["code"], "not_in_room");
    for bad in [
        json!({"type": "join", "room": "Not A Room"}),
        json!({"type": "join", "room": "x".repeat(33)}),
        json!({"type": "input", "seq": 1, "dx": 5, "dy": 0}),
        json!({"type": "input", "seq": "one", "dx": 0, "dy": 0}),
        json!({"type": "chat", "text": "x".repeat(201)}),
        json!({"type": "chat", "text": "   "}),
    ] {
        socket.send_json(bad.clone()).await;
        let error = socket.next_of_type("error").await;
        assert_eq!(error["code"], "bad_message", "{bad}");
    }
    socket.send_json(json!({"type": "join"})).await;
    assert_eq!(socket.next_of_type("joined").await["room"], "lobby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_and_the_player_stays_where_they_were() {
    let app = spawn_with(TestDb::sqlite(), |config| config.room_capacity = 1).await;
    let (alice, bob) = (app.new_player().await, app.new_player().await);
    let (_a, _) = in_room(&app, &alice, "duel").await;
    let (mut b, _) = in_room(&app, &bob, "lobby").await;
    b.send_json(json!({"type": "join", "room": "duel"})).await;
    assert_eq!(b.next_of_type("error").await["code"], "room_full");
    b.send_json(json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(b.next_of_type("chat").await["room"], "lobby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_between_rooms_leaves_the_old_one() {
    let app = spawn_app().await;
    let (alice, bob) = (app.new_player().await, app.new_player().await);
    let (mut a, _) = in_room(&app, &alice, "lobby").await;
    let (mut b, _) = in_room(&app, &bob, "lobby").await;
    a.next_of_type("presence").await;
    b.send_json(json!({"type": "join", "room": "arena"})).await;
    assert_eq!(b.next_of_type("joined").await["room"], "arena");
    assert_eq!(b.next_of_type("left").await["room"], "lobby");
    let gone = a.next_of_type("presence").await;
    assert_eq!(
        (gone["event"].as_str(), gone["player"]["name"].as_str()),
        (Some("leave"), Some(bob.username.as_str()))
    );
}

/// Applies binary frames as a client must: each to the view at its baseline, and
/// acknowledges the newest on the next input.
struct BinaryClient {
    views: std::collections::BTreeMap<u32, tether_shared::snapshot::View>,
    newest: u32,
}

impl BinaryClient {
    fn new() -> BinaryClient {
        BinaryClient { views: Default::default(), newest: 0 }
    }

    async fn next_view(&mut self, socket: &mut WsClient) -> (u32, u32, tether_shared::snapshot::View) {
        use tether_shared::snapshot;
        let frame = socket.next_binary().await;
        let (_, baseline) = snapshot::header(&frame).expect("a snapshot frame");
        let base = match baseline {
            0 => Default::default(),
            _ => self.views.get(&baseline).cloned().expect("the baseline is a view this client acknowledged"),
        };
        let (tick, view) = snapshot::apply(&base, &frame).expect("the frame applies to its baseline");
        self.views.insert(tick, view.clone());
        self.newest = tick;
        (tick, baseline, view)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_player_rebuilds_the_room_from_delta_frames_and_a_json_player_beside_it_is_unchanged() {
    let app = spawn_app().await;
    let alice = app.new_player().await;
    let bob = app.new_player().await;
    let mut a = app.connect_ws(&alice.access_token).await;
    a.send_json(json!({"type": "join", "room": "bits", "encoding": "binary"})).await;
    let me = a.next_of_type("joined").await["you"].as_u64().unwrap() as u32;
    let (mut b, bob_joined) = in_room(&app, &bob, "bits").await;
    let bob_id = bob_joined["you"].as_u64().unwrap() as u32;

    let mut client = BinaryClient::new();
    let (_, first_baseline, _) = client.next_view(&mut a).await;
    assert_eq!(first_baseline, 0, "the first frame is a full view");
    let mut deltas = 0;
    let mut seq = 0;
    let acked = loop {
        seq += 1;
        a.send_json(json!({"type": "input", "seq": seq, "dx": 0, "dy": if seq % 2 == 0 { 1 } else { -1 }, "ack": client.newest}))
            .await;
        let (tick, baseline, view) = client.next_view(&mut a).await;
        deltas += usize::from(baseline != 0);
        let mine = view.players.iter().find(|p| p.id == me).expect("I am in my view").ack;
        if mine >= 3 && view.players.iter().any(|p| p.id == bob_id) {
            break tick;
        }
        assert!(seq < 100, "input 3 was never acknowledged");
    };
    assert!(deltas > 0, "acknowledged frames are followed by deltas");
    assert!(client.newest >= acked);

    // Bob's JSON snapshot of a tick and Alice's view of it agree on Alice.
    let (tick, _, view) = client.next_view(&mut a).await;
    let snapshot = b
        .next_matching("bob's snapshot of the same tick", |m| m["type"] == "snapshot" && m["tick"] == tick)
        .await;
    let json_me = my_state(&snapshot, u64::from(me)).unwrap();
    let binary_me = view.players.iter().find(|p| p.id == me).unwrap();
    assert_eq!(json_me["ack"], binary_me.ack);
    assert!((json_me["x"].as_f64().unwrap() * 10.0 - f64::from(binary_me.x)).abs() < 1.5);
    assert!((json_me["y"].as_f64().unwrap() * 10.0 - f64::from(binary_me.y)).abs() < 1.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cycling_room_names_cannot_use_up_the_rooms_and_an_empty_room_ends() {
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.max_rooms_per_user = 2;
        config.room_grace = Duration::from_millis(300);
    })
    .await;
    let mallory = app.new_player().await;
    let alice = app.new_player().await;
    let mut m = app.connect_ws(&mallory.access_token).await;
    for room in ["m-1", "m-2"] {
        m.send_json(json!({"type": "join", "room": room})).await;
        m.next_of_type("joined").await;
    }
    m.send_json(json!({"type": "join", "room": "m-3"})).await;
    let refused = m.next_of_type("error").await;
    assert_eq!(refused["code"], "room_unavailable", "{refused}");
    let (_a, joined) = in_room(&app, &alice, "alices").await;
    assert_eq!(joined["room"], "alices", "another player still gets a room");

    // m-1 is empty since Mallory moved to m-2: once its grace is over it ends, and
    // Mallory may open another.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        m.send_json(json!({"type": "join", "room": "m-3"})).await;
        let answer =
            m.next_matching("joined or error", |msg| msg["type"] == "joined" || msg["type"] == "error").await;
        if answer["type"] == "joined" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "m-1 never ended: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A room filling at once sends each member one presence frame per arrival. A member
/// that reads nothing meanwhile (a tab in the background, a phone on a slow link) gets
/// every arrival once it reads again, and is not closed 1008 for the burst: with a
/// 64-frame queue, 99 arrivals behind a stalled write closed it as a slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_while_a_room_of_100_fills_gets_every_arrival_and_stays() {
    const PLAYERS: usize = 100;
    let app = spawn_with(TestDb::sqlite(), |config| {
        config.room_capacity = PLAYERS as u32;
        config.tcp_send_buffer_bytes = Some(4096);
    })
    .await;
    let mut logins = Vec::new();
    for _ in 0..PLAYERS {
        logins.push(app.new_player().await);
    }
    let mut paused = app.slow_reader_ws(&logins[0].access_token).await;
    paused.send_json(json!({"type": "join", "room": "party"})).await;
    // From here `paused` reads nothing while the others arrive. Pongs echo `t` as
    // written: three of 12,000 digits fill its kernel buffers, so its writes stall now.
    let digits = "7".repeat(12_000);
    for _ in 0..3 {
        paused.send_text(&format!(r#"{{"type":"ping","t":{digits}}}"#)).await;
    }
    let mut others = Vec::new();
    for login in &logins[1..] {
        others.push(in_room(&app, login, "party").await.0);
    }
    // A close (1008 slow consumer) instead of a frame fails `next_text`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut arrived = std::collections::HashSet::new();
    let mut snapshot_after = false;
    while arrived.len() < PLAYERS - 1 || !snapshot_after {
        assert!(tokio::time::Instant::now() < deadline, "{} of {} arrivals seen", arrived.len(), PLAYERS - 1);
        let text = paused.next_text().await;
        if text.starts_with(r#"{"type":"pong""#) {
            continue; // too long a number for serde_json, and not what this is about
        }
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "presence" && message["event"] == "join" {
            arrived.insert(message["player"]["name"].as_str().unwrap().to_owned());
        }
        snapshot_after = arrived.len() == PLAYERS - 1 && message["type"] == "snapshot";
    }
    drop(others);
}
