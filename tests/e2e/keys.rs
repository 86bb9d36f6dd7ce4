//! Key sets: rotation that logs nobody out, rereads on change and on SIGHUP that a bad
//! file cannot break, the JWKS as another library reads it, and the algorithm
//! confusions a key set must refuse.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_e2e::process::{ServerProcess, run_bounded, tether};
use tether_e2e::services::{kid_of, new_key, write_key_file};
use tether_e2e::*;

/// The contract's bound on a key file change reaching a running server.
const RELOAD_BOUND: Duration = Duration::from_secs(5);

async fn spawn_with_keys(db: std::sync::Arc<TestDb>, keys: &Path) -> TestApp {
    let keys = keys.to_path_buf();
    spawn_with(db, move |config| {
        config.jwt_secret_file = None;
        config.jwt_keys_file = Some(keys);
    })
    .await
}

/// Logs `username` in until its token carries `kid`, for at most the reload bound.
async fn login_until_kid(http: &reqwest::Client, base: &str, username: &str, kid: &str) -> Login {
    let deadline = tokio::time::Instant::now() + RELOAD_BOUND + Duration::from_secs(2);
    loop {
        let login = login_at(http, base, username).await;
        if kid_of(&login.access_token) == kid {
            return login;
        }
        assert!(tokio::time::Instant::now() < deadline, "no token with kid {kid} on {base} in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn me_status(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    http.get(format!("{base}/api/me")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_logs_nobody_out_and_a_removed_key_is_refused() {
    let db = TestDb::sqlite();
    let keys = db.dir.path().join("keys.json");
    let (hmac, eddsa) = (new_key("HS256", "hs-1"), new_key("EdDSA", "ed-1"));
    write_key_file(&keys, "hs-1", std::slice::from_ref(&hmac));
    let app = spawn_with_keys(db, &keys).await;
    let old = app.new_player().await;
    assert_eq!(kid_of(&old.access_token), "hs-1");

    write_key_file(&keys, "ed-1", &[hmac, eddsa.clone()]);
    let fresh = login_until_kid(&app.http, &app.base, &old.username, "ed-1").await;
    assert_eq!(jsonwebtoken::decode_header(&fresh.access_token).unwrap().alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(app.get_me(&old.access_token).await.status(), 200, "the old key's token still works");
    app.connect_ws(&old.access_token).await;

    write_key_file(&keys, "ed-1", &[eddsa]);
    let deadline = tokio::time::Instant::now() + RELOAD_BOUND + Duration::from_secs(2);
    while app.get_me(&old.access_token).await.status() == 200 {
        assert!(tokio::time::Instant::now() < deadline, "the removed key still verified");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_error(app.get_me(&old.access_token).await, 401, "invalid_token").await;
    let mut refused = app.ws_with(&[("authorization", &format!("Bearer {}", old.access_token))], "").await;
    assert_eq!(refused.next_close().await.code, 4401);
    assert_eq!(app.get_me(&fresh.access_token).await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_public_halves_that_another_library_verifies() {
    let db = TestDb::sqlite();
    let keys = db.dir.path().join("keys.json");
    write_key_file(
        &keys,
        "ed-1",
        &[new_key("HS256", "hs-1"), new_key("EdDSA", "ed-1"), new_key("EdDSA", "ed-0")],
    );
    let app = spawn_with_keys(db, &keys).await;
    let response = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "max-age=300");
    let jwks: Value = response.json().await.unwrap();
    let published = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = published.iter().map(|key| key["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, ["ed-1", "ed-0"], "the HMAC key never appears");
    for key in published {
        assert_eq!(
            (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
            (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA"), &json!("sig"))
        );
        assert!(key.get("d").is_none() && key.get("k").is_none(), "a private part: {key}");
    }

    let player = app.new_player().await;
    let (ok, printed) = verify_with_node(&jwks, &player.access_token).await;
    assert!(ok, "Node's crypto refused the token: {printed}");
    // The check can fail: a changed payload is refused by the same script.
    let mut parts: Vec<&str> = player.access_token.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"someone else"}"#);
    parts[1] = &forged_payload;
    let (ok, printed) = verify_with_node(&jwks, &parts.join(".")).await;
    assert!(!ok, "a forged token verified: {printed}");
    app.stop().await;
}

/// Verifies a token against a JWKS with Node's own crypto (OpenSSL), which shares no
/// code with the server's: the published key must be usable as published.
async fn verify_with_node(jwks: &Value, token: &str) -> (bool, String) {
    const SCRIPT: &str = r#"
        const crypto = require('crypto');
        const [jwks, token] = [JSON.parse(process.argv[1]), process.argv[2]];
        const [h, p, s] = token.split('.');
        const header = JSON.parse(Buffer.from(h, 'base64url'));
        const jwk = jwks.keys.find((key) => key.kid === header.kid);
        if (header.alg !== 'EdDSA' || !jwk) { console.log('no EdDSA key for', header); process.exit(2); }
        const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
        const ok = crypto.verify(null, Buffer.from(h + '.' + p), key, Buffer.from(s, 'base64url'));
        const claims = JSON.parse(Buffer.from(p, 'base64url'));
        console.log(ok ? 'verified for ' + claims.name : 'bad signature');
        process.exit(ok && claims.iss === 'tether' && claims.aud === 'tether' ? 0 : 1);
    "#;
    let mut command = tokio::process::Command::new("node");
    command.args(["-e", SCRIPT, &jwks.to_string(), token]);
    run_bounded(command, "node", Duration::from_secs(30)).await
}

/// An HS256 token over `claims`, keyed with `secret`, under `kid`.
fn hs256_token(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_key_never_serves_as_an_hmac_secret() {
    let db = TestDb::sqlite();
    let keys = db.dir.path().join("keys.json");
    write_key_file(&keys, "ed-1", &[new_key("HS256", "hs-1"), new_key("EdDSA", "ed-1")]);
    let app = spawn_with_keys(db, &keys).await;
    let player = app.new_player().await;
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(player.access_token.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    let jwks: Value =
        app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let jwk = &jwks["keys"][0];
    let x = jwk["x"].as_str().unwrap();
    let raw = URL_SAFE_NO_PAD.decode(x).unwrap();
    let secrets: [(&str, Vec<u8>); 3] = [
        ("raw bytes", raw),
        ("base64url text", x.as_bytes().to_vec()),
        ("JWK JSON", jwk.to_string().into_bytes()),
    ];
    for (what, secret) in &secrets {
        for kid in ["ed-1", "hs-1"] {
            let forged = hs256_token(kid, &claims, secret);
            expect_error(app.get_me(&forged).await, 401, "invalid_token").await;
            let mut socket = app.ws_with(&[("authorization", &format!("Bearer {forged}"))], "").await;
            assert_eq!(socket.next_close().await.code, 4401, "HS256 under {kid} keyed with the {what}");
        }
    }
    // The real EdDSA signature, relabelled as the HMAC key's: refused too.
    let (_, rest) = player.access_token.split_once('.').unwrap();
    let relabelled =
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT","kid":"hs-1"}"#));
    expect_error(app.get_me(&relabelled).await, 401, "invalid_token").await;
    assert_eq!(app.get_me(&player.access_token).await.status(), 200, "the real token passes");
    app.stop().await;
}

fn keys_args(db: &TestDb, keys: &str) -> Vec<String> {
    #[rustfmt::skip]
    let args = [
        "--bind", "127.0.0.1:0",
        "--database-url", &db.url,
        "--jwt-keys-file", keys,
        "--argon2-memory-kib", "8",
        "--argon2-iterations", "1",
        "--auth-per-ip-per-minute", "0",
        "--auth-per-username-per-minute", "0",
        "--upgrades-per-ip-per-minute", "0",
    ];
    args.into_iter().map(str::to_owned).collect()
}

/// `tether serve <args>`, started off the async workers (it may build the binary).
async fn start(args: Vec<String>) -> ServerProcess {
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    wait_until_ready(&http, &server.base()).await;
    server
}

fn send_signal(process: &ServerProcess, signal: &str) {
    let sent =
        std::process::Command::new("kill").args([signal, &process.pid().to_string()]).status().unwrap();
    assert!(sent.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reread_is_ignored_and_sighup_never_stops_the_server() {
    let db = TestDb::sqlite();
    let keys = db.dir.path().join("keys.json");
    let hmac = new_key("HS256", "hs-1");
    write_key_file(&keys, "hs-1", std::slice::from_ref(&hmac));
    let keys_text = keys.display().to_string();
    let mut server = start(keys_args(&db, &keys_text)).await;
    let (base, http) = (server.base(), reqwest::Client::builder().timeout(WAIT).build().unwrap());
    let player = register_and_login_at(&http, &base).await;

    // Half-written, then a duplicate kid: each is logged and ignored.
    std::fs::write(&keys, r#"{"active": "hs-1", "keys": [{"kty": "oct""#).unwrap();
    let rejected = |line: &Value| line["message"] == "the key file does not validate; the keys in force stay";
    server.wait_for_log(rejected, RELOAD_BOUND + Duration::from_secs(2));
    write_key_file(&keys, "hs-1", &[hmac.clone(), hmac.clone()]);
    send_signal(&server, "-HUP");
    let deadline = std::time::Instant::now() + RELOAD_BOUND;
    while server.logs().iter().filter(|line| rejected(line)).count() < 2 {
        assert!(std::time::Instant::now() < deadline, "the duplicate kid was not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(me_status(&http, &base, &player.access_token).await, 200, "the keys in force stayed");

    // A good file and a SIGHUP: reread, and the server is still up.
    write_key_file(&keys, "ed-1", &[hmac, new_key("EdDSA", "ed-1")]);
    send_signal(&server, "-HUP");
    let reloaded = server.wait_for_log(
        |line| line["message"] == "signing keys reloaded" && line["active"] == "ed-1",
        RELOAD_BOUND,
    );
    assert_eq!(reloaded["kids"], "hs-1,ed-1");
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    login_until_kid(&http, &base, &player.username, "ed-1").await;
    assert_eq!(me_status(&http, &base, &player.access_token).await, 200);
    assert!(server.child.try_wait().unwrap().is_none(), "SIGHUP stopped the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_from_a_secret_file_to_a_key_file_logs_nobody_out() {
    let db = TestDb::sqlite();
    let mut server = process::serve_on(&db).await;
    let (base, http) = (server.base(), reqwest::Client::builder().timeout(WAIT).build().unwrap());
    let player = register_and_login_at(&http, &base).await;
    // SIGHUP without a key file is logged and changes nothing.
    send_signal(&server, "-HUP");
    server.wait_for_log(|line| line["message"] == "SIGHUP: no --jwt-keys-file to reread", RELOAD_BOUND);
    assert!(server.terminate(Duration::from_secs(15)).success());

    let secret = db.dir.path().join("jwt-secret");
    let converted =
        tether_command(&["keys", "generate", "--from-secret-file", secret.to_str().unwrap()]).await;
    let converted: Value = serde_json::from_str(converted.trim()).unwrap();
    assert_eq!(converted["kid"].as_str(), Some(kid_of(&player.access_token).as_str()), "the v1 kid");
    assert_eq!(converted["kty"], "oct");
    let generated = tether_command(&["keys", "generate", "--alg", "EdDSA", "--kid", "ed-new"]).await;
    let generated: Value = serde_json::from_str(generated.trim()).unwrap();
    assert_eq!((&generated["kty"], &generated["kid"]), (&json!("OKP"), &json!("ed-new")));
    assert!(generated["d"].is_string() && generated["x"].is_string());

    let keys = db.dir.path().join("keys.json");
    write_key_file(&keys, "ed-new", &[converted, generated]);
    let keys_text = keys.display().to_string();
    let server = start(keys_args(&db, &keys_text)).await;
    let base = server.base();
    assert_eq!(me_status(&http, &base, &player.access_token).await, 200, "the v1 token survived the move");
    let fresh = login_until_kid(&http, &base, &player.username, "ed-new").await;
    assert_eq!(me_status(&http, &base, &fresh.access_token).await, 200);

    // Both flags at once is a startup error, whichever way each is given.
    let mut both =
        tether(&["serve", "--bind", "127.0.0.1:0", "--database-url", &db.url, "--jwt-keys-file", &keys_text]);
    both.env("TETHER_JWT_SECRET_FILE", &secret);
    let output = tokio::task::spawn_blocking(move || both.output().unwrap()).await.unwrap();
    assert!(!output.status.success(), "serve started with both key flags");
}

/// Runs `tether <args>` and returns what it printed; panics if it fails.
async fn tether_command(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = tether(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        assert!(output.status.success(), "tether {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_change_reaches_every_node_of_a_cluster_without_a_restart() {
    let Some(db) = TestDb::postgres("keys::cluster").await else { return };
    let keys: PathBuf = db.dir.path().join("keys.json");
    let hmac = new_key("HS256", "hs-1");
    write_key_file(&keys, "hs-1", std::slice::from_ref(&hmac));
    let keys_text = keys.display().to_string();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let mut nodes = Vec::new();
    for node in ["a", "b", "c"] {
        let mut args = keys_args(&db, &keys_text);
        args.extend(["--node-id".to_owned(), format!("keys-{node}")]);
        nodes.push(start(args).await);
    }
    let player = register_and_login_at(&http, &nodes[0].base()).await;
    assert_eq!(kid_of(&player.access_token), "hs-1");

    write_key_file(&keys, "ed-1", &[hmac, new_key("EdDSA", "ed-1")]);
    // Each node signs with the new key once it has reread the file...
    let mut fresh = Vec::new();
    for node in &nodes {
        fresh.push(login_until_kid(&http, &node.base(), &player.username, "ed-1").await);
    }
    // ...and then every node takes every node's tokens, old and new.
    for fresh in &fresh {
        for other in &nodes {
            assert_eq!(
                me_status(&http, &other.base(), &fresh.access_token).await,
                200,
                "ed-1 token on every node"
            );
            assert_eq!(me_status(&http, &other.base(), &player.access_token).await, 200, "the old token too");
        }
    }
}
