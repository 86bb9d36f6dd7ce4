//! The bad-token battery: every way a token can be wrong gets 401 `invalid_token`
//! on HTTP and close 4401 (never `welcome`) on upgrade. The battery is decided from the
//! token and the in-memory registry, so it runs once; an unknown session, which the
//! server looks up in its store, runs on both backends.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tether_e2e::*;

fn segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn decode_segment(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// A token with this header and these claims, HMAC-signed with `secret`.
fn forge(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!("{}.{}", segment(header), segment(claims));
    let key = EncodingKey::from_secret(secret).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

/// Every malformed, forged or unacceptable variation of a real player's token that the
/// server refuses without asking its database. (A validly signed token for a session
/// the node does not know is looked up in the store first: that case is tested on
/// both backends below.)
fn bad_tokens(real: &str, other_user_id: &str) -> Vec<(&'static str, String)> {
    let parts: Vec<&str> = real.split('.').collect();
    let header = decode_segment(parts[0]);
    let claims = decode_segment(parts[1]);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let good = |claims: Value| forge(&header, &claims, JWT_SECRET);

    let none_header = json!({"alg": "none", "typ": "JWT", "kid": header["kid"]});
    let rs_header = json!({"alg": "RS256", "typ": "JWT", "kid": header["kid"]});
    let mut tampered = claims.clone();
    tampered["role"] = json!("admin");
    vec![
        ("garbage", "garbage".to_owned()),
        ("three garbage parts", "a.b.c".to_owned()),
        ("alg none", format!("{}.{}.", segment(&none_header), segment(&claims))),
        ("wrong key", forge(&header, &claims, b"some other secret that is long enough!!")),
        ("expired", good(with(with(claims.clone(), "iat", json!(now - 7200)), "exp", json!(now - 3600)))),
        ("wrong iss", good(with(claims.clone(), "iss", json!("someone-else")))),
        ("missing iss", good(without(claims.clone(), "iss"))),
        ("wrong aud", good(with(claims.clone(), "aud", json!("someone-else")))),
        ("missing aud", good(without(claims.clone(), "aud"))),
        ("missing exp", good(without(claims.clone(), "exp"))),
        ("missing sid", good(without(claims.clone(), "sid"))),
        ("sid of another user", good(with(claims.clone(), "sub", json!(other_user_id)))),
        ("tampered payload", format!("{}.{}.{}", parts[0], segment(&tampered), parts[2])),
        ("HS/RS confusion", forge(&rs_header, &claims, JWT_SECRET)),
        ("10 KB token", good(with(claims.clone(), "pad", json!("x".repeat(10 * 1024))))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_gets_401_invalid_token_on_http() {
    let app = spawn_app().await;
    let player = app.new_player().await;
    let other = app.new_player().await;
    assert_eq!(app.get_me(&player.access_token).await.status(), 200, "the real token works");
    for (case, token) in bad_tokens(&player.access_token, &other.user_id) {
        let response = app.get_me(&token).await;
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(response.status(), 401, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{case}: {body}");
        assert_eq!(challenge.as_deref(), Some(r#"Bearer error="invalid_token""#), "{case}");
    }
    for header in ["", "Bearer", "Basic dXNlcjpwYXNz", "bearer  "] {
        let response = app.http.get(app.url("/api/me")).header("authorization", header).send().await.unwrap();
        expect_error(response, 401, "invalid_token").await;
    }
    expect_error(app.http.get(app.url("/api/me")).send().await.unwrap(), 401, "invalid_token").await;
    let by_query =
        app.http.get(app.url(&format!("/api/me?access_token={}", player.access_token))).send().await;
    expect_error(by_query.unwrap(), 401, "invalid_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_closed_with_4401_right_after_the_upgrade() {
    let app = spawn_app().await;
    let player = app.new_player().await;
    let other = app.new_player().await;
    let mut cases = bad_tokens(&player.access_token, &other.user_id);
    cases.push(("malformed authorization header", String::new()));
    for (case, token) in cases {
        let auth = if token.is_empty() { "Token nope".to_owned() } else { format!("Bearer {token}") };
        let mut socket = app.ws_with(&[("authorization", &auth)], "").await;
        let (frames, closed) = socket.frames_until_close().await;
        assert!(frames.is_empty(), "{case}: no welcome, got {frames:?}");
        assert_eq!(closed.code, 4401, "{case}: {closed:?}");
    }
    let mut anonymous = app.ws_with(&[], "").await;
    assert_eq!(anonymous.next_close().await.code, 4401);

    // A browser offering tether.v1 still gets it selected, or it would see only 1006.
    let protocols = "tether.v1, tether.bearer.forged.token.here";
    let mut browser = app.ws_with(&[("sec-websocket-protocol", protocols)], "").await;
    assert_eq!(browser.protocol.as_deref(), Some("tether.v1"));
    assert_eq!(browser.next_close().await.code, 4401);
}

on_both_backends! {
    async fn a_token_for_a_session_the_store_never_had_is_refused_with_401_and_4401(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let parts: Vec<&str> = player.access_token.split('.').collect();
        let header = decode_segment(parts[0]);
        let claims = with(decode_segment(parts[1]), "sid", json!(uuid::Uuid::new_v4().to_string()));
        let unknown = forge(&header, &claims, JWT_SECRET);

        let response = app.get_me(&unknown).await;
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        expect_error(response, 401, "invalid_token").await;
        assert_eq!(challenge.as_deref(), Some(r#"Bearer error="invalid_token""#));
        let mut socket = app.ws_with(&[("authorization", &format!("Bearer {unknown}"))], "").await;
        let (frames, closed) = socket.frames_until_close().await;
        assert!(frames.is_empty(), "no welcome, got {frames:?}");
        assert_eq!(closed.code, 4401, "{closed:?}");
        assert_eq!(app.get_me(&player.access_token).await.status(), 200, "the real session is untouched");
    }
}
