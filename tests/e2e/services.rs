//! Other services of the game: their credentials (made, listed and revoked by the
//! CLI, refused by a running node within 5 s) and token introspection, which must
//! answer exactly as a Bearer route would judge the token.

use serde_json::{Value, json};
use std::time::Duration;
use tether_e2e::nodes::cli;
use tether_e2e::services::{Credential, introspect, is_active, service_credential};
use tether_e2e::*;

/// A node rereads the credentials every 2 s; the contract gives 5 s.
const CREDENTIAL_BOUND: Duration = Duration::from_secs(5);

/// An HS256 token under the test secret's v1 kid, with these claims: what a forger
/// holding nothing but a guess, or a holder of the secret with other claims, makes.
fn token_with(claims: &Value, secret: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(tether::auth::keyset::v1_key_id(JWT_SECRET));
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret).unwrap()).unwrap()
}

fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

on_both_backends! {
    async fn introspection_answers_as_a_bearer_route_would(db) {
        let app = spawn_with(db, |_| {}).await;
        let shop = service_credential(&app, "shop").await;
        let player = app.new_player().await;

        let response = introspect(&app.http, &app.base, &shop, &player.access_token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["active"], true);
        let claims = claims_of(&player.access_token);
        for field in ["sub", "sid", "jti", "iss", "aud", "iat", "exp", "name", "role"] {
            assert_eq!(body[field], claims[field], "{field}");
        }
        assert_eq!(body["token_type"], "access_token");
        // The JSON form says the same.
        let json_form = app
            .http
            .post(app.url("/api/auth/introspect"))
            .basic_auth(&shop.client_id, Some(&shop.client_secret))
            .json(&json!({"token": player.access_token}))
            .send()
            .await
            .unwrap();
        assert_eq!(json_form.json::<Value>().await.unwrap()["active"], true);

        // Expiry with the Bearer routes' own leeway (30 s): inside it active, past it not.
        let mut late = claims.clone();
        late["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 10);
        assert!(is_active(&app.http, &app.base, &shop, &token_with(&late, JWT_SECRET)).await, "within the leeway");
        late["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 60);
        assert!(!is_active(&app.http, &app.base, &shop, &token_with(&late, JWT_SECRET)).await, "expired");
        let mut elsewhere = claims.clone();
        elsewhere["aud"] = json!("the-shop");
        assert!(!is_active(&app.http, &app.base, &shop, &token_with(&elsewhere, JWT_SECRET)).await, "wrong audience");
        let forged = token_with(&claims, b"a guess at the secret, thirty-two bytes+");
        assert!(!is_active(&app.http, &app.base, &shop, &forged).await, "forged");
        assert!(!is_active(&app.http, &app.base, &shop, &player.refresh_token).await, "a refresh token");
        assert!(!is_active(&app.http, &app.base, &shop, "not.a.token").await, "garbage");

        // No token at all is the caller's mistake, not an inactive token.
        let empty = app
            .http
            .post(app.url("/api/auth/introspect"))
            .basic_auth(&shop.client_id, Some(&shop.client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token_type_hint=access_token")
            .send()
            .await
            .unwrap();
        expect_error(empty, 400, "invalid_request").await;

        // Revoked: inactive the moment the logout has answered.
        let answered = app.post_auth("/api/auth/logout", &player.access_token, None).await;
        assert_eq!(answered.status(), 204);
        assert!(!is_active(&app.http, &app.base, &shop, &player.access_token).await, "revoked");
        app.stop().await;
    }
}

on_both_backends! {
    async fn service_credentials_are_checked_before_the_body(db) {
        let app = spawn_with(db, |_| {}).await;
        let shop = service_credential(&app, "shop").await;
        let chat = service_credential(&app, "chat").await;
        let player = app.new_player().await;
        let wrong = [
            None,
            Some(Credential { client_secret: chat.client_secret.clone(), ..shop.clone() }),
            Some(Credential { client_id: "svc_nobody".into(), ..shop.clone() }),
        ];
        for credential in wrong {
            let mut request = app.http.post(app.url("/api/auth/introspect")).body("not even a form");
            if let Some(credential) = &credential {
                request = request.basic_auth(&credential.client_id, Some(&credential.client_secret));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.headers()["www-authenticate"], r#"Basic realm="tether""#);
            expect_error(response, 401, "invalid_client").await;
        }
        // A player's own token is no service credential.
        let as_player = app.http.post(app.url("/api/auth/introspect")).bearer_auth(&player.access_token).send().await.unwrap();
        expect_error(as_player, 401, "invalid_client").await;

        // Revoked: refused at the node's next reread.
        assert!(app.state.store.revoke_service("shop", tether::store::now()).await.unwrap());
        tether::services::load(&app.state).await.unwrap();
        expect_error(introspect(&app.http, &app.base, &shop, &player.access_token).await, 401, "invalid_client").await;
        assert!(is_active(&app.http, &app.base, &chat, &player.access_token).await, "the other service is unaffected");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_credentials_and_a_running_node_follows_within_five_seconds() {
    let db = TestDb::sqlite();
    let server = process::serve_on(&db).await;
    let (base, http) = (server.base(), reqwest::Client::builder().timeout(WAIT).build().unwrap());
    let url = db.url.clone();
    let args = |words: &[&str]| -> Vec<String> {
        words.iter().map(|word| word.to_string()).chain(["--database-url".to_owned(), url.clone()]).collect()
    };
    let printed = cli(args(&["service", "create", "--name", "shop"]), None).await;
    assert_eq!(printed.trim().lines().count(), 1, "one line of JSON: {printed}");
    let created: Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(created["name"], "shop");
    let shop = Credential::from_printed(&printed);
    let plain = |text: &str| text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    assert!(plain(&shop.client_id) && plain(&shop.client_secret) && shop.client_secret.len() >= 43);

    let taken = process::tether(
        &args(&["service", "create", "--name", "shop"]).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert!(!taken.status.success(), "a name in use must fail");

    let listed = cli(args(&["service", "list"]), None).await;
    assert!(listed.contains(r#""name":"shop""#) && listed.contains(&shop.client_id), "{listed}");
    assert!(!listed.contains(&shop.client_secret), "list never shows a secret");

    let token = register_and_login_at(&http, &base).await.access_token;
    let status = |http: reqwest::Client, base: String, shop: Credential, token: String| async move {
        introspect(&http, &base, &shop, &token).await.status().as_u16()
    };
    let deadline = tokio::time::Instant::now() + CREDENTIAL_BOUND;
    while status(http.clone(), base.clone(), shop.clone(), token.clone()).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the new credential was not taken up in 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = services::Stream::open(&base, &shop, None, false).await;

    cli(args(&["service", "revoke", "--name", "shop"]), None).await;
    let revoked_at = tokio::time::Instant::now();
    while status(http.clone(), base.clone(), shop.clone(), token.clone()).await != 401 {
        assert!(revoked_at.elapsed() < CREDENTIAL_BOUND, "the revoked credential still worked after 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stream.ends_within(CREDENTIAL_BOUND).await, "its open stream did not end");
    let again = process::tether(
        &args(&["service", "revoke", "--name", "shop"]).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert!(!again.status.success(), "revoking twice names no live credential");
}

/// The example consumer in `server/examples/session_guard.rs`, run as its README
/// says: it accepts a player's EdDSA token without calling Tether, and refuses it
/// once the session's revocation has come down the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_consumer_trusts_tokens_offline_and_follows_revocations() {
    use std::io::BufRead as _;
    let db = TestDb::sqlite();
    let keys = db.dir.path().join("keys.json");
    services::write_key_file(&keys, "ed-1", &[services::new_key("EdDSA", "ed-1")]);
    let app = spawn_with(db, {
        let keys = keys.clone();
        move |config| {
            config.jwt_secret_file = None;
            config.jwt_keys_file = Some(keys);
        }
    })
    .await;
    let guard_credential = service_credential(&app, "session-guard").await;
    let binary = tokio::task::spawn_blocking(|| process::example_binary("session_guard")).await.unwrap();
    let mut guard = std::process::Command::new(binary)
        .args(["--tether", &app.base, "--bind", "127.0.0.1:0"])
        .env("SERVICE_CLIENT_ID", &guard_credential.client_id)
        .env("SERVICE_CLIENT_SECRET", &guard_credential.client_secret)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = guard.stdout.take().unwrap();
    let listening = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("session_guard listening on ").map(str::to_owned))
    });
    let addr =
        tokio::time::timeout(Duration::from_secs(30), listening).await.expect("the example starts").unwrap();
    let Some(addr) = addr else {
        let _ = guard.kill();
        panic!("the example exited before listening");
    };
    let whoami = |token: String| {
        let (http, url) = (app.http.clone(), format!("http://{addr}/whoami"));
        async move { http.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };

    let player = app.new_player().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    // It answers once it has read the snapshot.
    while whoami(player.access_token.clone()).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the example never accepted a live token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(whoami("not.a.token".into()).await, 401);
    assert_eq!(app.post_auth("/api/auth/logout", &player.access_token, None).await.status(), 204);
    let revoked_at = tokio::time::Instant::now();
    while whoami(player.access_token.clone()).await != 401 {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "the example still accepted a revoked session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = app.new_player().await;
    assert_eq!(whoami(other.access_token).await, 200, "other sessions still pass");
    let _ = guard.kill();
    let _ = guard.wait();
    app.stop().await;
}
