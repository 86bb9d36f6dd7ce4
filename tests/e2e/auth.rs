//! Registration, login, logout, and the contract's error format.

use serde_json::{Value, json};
use tether_e2e::*;

on_both_backends! {
    async fn register_then_login_returns_a_token_pair_and_a_strict_refresh_cookie(db) {
        let app = spawn_with(db, |_| {}).await;
        let name = unique_name("Mixed_");
        let response = app.register(&name).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["user"]["username"], name.as_str());
        assert_eq!(body["user"]["role"], "player");
        assert!(uuid::Uuid::parse_str(body["user"]["id"].as_str().unwrap()).is_ok());

        let response = app
            .post_json("/api/auth/login", json!({"username": name.to_lowercase(), "password": PASSWORD}))
            .await;
        assert_eq!(response.status(), 200, "usernames are matched without regard to case");
        let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        let pair: Value = response.json().await.unwrap();
        assert_eq!(pair["token_type"], "Bearer");
        assert_eq!(pair["expires_in"], 900);
        assert_eq!(pair["user"]["username"], name.as_str());
        let refresh = pair["refresh_token"].as_str().unwrap();
        assert!(refresh.len() >= 43, "at least 256 bits");
        assert!(cookie.starts_with(&format!("tether_refresh={refresh}")), "{cookie}");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/auth", "Max-Age=2592000"] {
            assert!(cookie.contains(attribute), "{attribute} missing from {cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain HTTP gets no Secure cookie");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_cookie_is_secure_behind_an_https_proxy() {
    // The proxy must be trusted: X-Forwarded-Proto from anyone else is ignored.
    let trusted = vec![tether::client_ip::parse_net("127.0.0.1").unwrap()];
    let app = spawn_with(TestDb::sqlite(), |config| config.trusted_proxies = trusted).await;
    let name = unique_name("p");
    app.register(&name).await;
    let response = app
        .http
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
}

on_both_backends! {
    async fn usernames_are_unique_without_regard_to_case_and_must_be_well_formed(db) {
        let app = spawn_with(db, |_| {}).await;
        let name = unique_name("Case");
        assert_eq!(app.register(&name).await.status(), 201);
        expect_error(app.register(&name.to_uppercase()).await, 409, "username_taken").await;
        for bad in ["ab", "white space", "x".repeat(33).as_str()] {
            expect_error(app.register(bad).await, 422, "invalid_request").await;
        }
        let short_password =
            app.post_json("/api/auth/register", json!({"username": unique_name("p"), "password": "short"})).await;
        expect_error(short_password, 422, "invalid_request").await;
    }
}

on_both_backends! {
    async fn a_wrong_password_and_an_unknown_user_get_the_same_answer(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let wrong = app
            .post_json("/api/auth/login", json!({"username": player.username, "password": "not the password"}))
            .await;
        let wrong = expect_error(wrong, 401, "invalid_credentials").await;
        let unknown = app
            .post_json("/api/auth/login", json!({"username": unique_name("ghost"), "password": PASSWORD}))
            .await;
        let unknown = expect_error(unknown, 401, "invalid_credentials").await;
        assert_eq!(wrong, unknown);
    }
}

on_both_backends! {
    async fn me_answers_from_the_token_and_the_registry(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let response = app.get_me(&player.access_token).await;
        assert_eq!(response.status(), 200);
        let me: Value = response.json().await.unwrap();
        assert_eq!(me["user"]["id"], player.user_id.as_str());
        assert_eq!(me["user"]["username"], player.username.as_str());
        assert_eq!(me["user"]["role"], "player");
        assert_eq!(me["session"]["id"], player.session_id.as_str());
        let created = time::OffsetDateTime::parse(
            me["session"]["created_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let expires = time::OffsetDateTime::parse(
            me["session"]["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!((expires - created).whole_days(), 30);
    }
}

on_both_backends! {
    async fn logout_revokes_the_session_and_clears_the_cookie(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let other = app.login(&player.username).await;
        let response = app.post_auth("/api/auth/logout", &player.access_token, None).await;
        assert_eq!(response.status(), 204);
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        assert!(cookie.starts_with("tether_refresh=;") && cookie.contains("Max-Age=0"), "{cookie}");

        let after = expect_error(app.get_me(&player.access_token).await, 401, "session_revoked").await;
        assert_eq!(after["error"], "session_revoked");
        expect_error(app.refresh(&player.refresh_token).await, 401, "session_revoked").await;
        assert_eq!(app.get_me(&other.access_token).await.status(), 200, "other sessions live on");
    }
}

on_both_backends! {
    async fn logout_all_revokes_every_session_of_the_user_only(db) {
        let app = spawn_with(db, |_| {}).await;
        let player = app.new_player().await;
        let second = app.login(&player.username).await;
        let stranger = app.new_player().await;
        let mut socket = app.connect_ws(&second.access_token).await;

        let response = app.post_auth("/api/auth/logout-all", &player.access_token, None).await;
        assert_eq!(response.status(), 204);
        let closed = socket.next_close_within(std::time::Duration::from_secs(1)).await;
        assert_eq!((closed.code, closed.reason.as_str()), (4001, "revoked: logout everywhere"));
        for token in [&player.access_token, &second.access_token] {
            expect_error(app.get_me(token).await, 401, "session_revoked").await;
        }
        assert_eq!(app.get_me(&stranger.access_token).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_errors_use_the_contract_body() {
    let app = spawn_app().await;
    let player = app.new_player().await;
    expect_error(app.http.get(app.url("/no/such/route")).send().await.unwrap(), 404, "not_found").await;
    expect_error(app.http.get(app.url("/api/auth/login")).send().await.unwrap(), 405, "method_not_allowed")
        .await;
    let malformed_id = app
        .http
        .delete(app.url("/api/sessions/not-a-uuid"))
        .bearer_auth(&player.access_token)
        .send()
        .await
        .unwrap();
    expect_error(malformed_id, 404, "not_found").await;
    let not_json = app
        .http
        .post(app.url("/api/auth/login"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    expect_error(not_json, 415, "invalid_request").await;
    let broken = app
        .http
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body("{\"username\":")
        .send()
        .await
        .unwrap();
    expect_error(broken, 400, "invalid_request").await;
    expect_error(app.post_json("/api/auth/login", json!({"username": "x"})).await, 422, "invalid_request")
        .await;
    let upgrade_without_headers = app.http.get(app.url("/ws")).send().await.unwrap();
    assert!(upgrade_without_headers.status().is_client_error());
    let body: Value = upgrade_without_headers.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // On a connection of its own: the server answers 413 without reading the body
    // and then closes the connection, which a pooled client could try to reuse.
    let huge = reqwest::Client::new()
        .post(app.url("/api/auth/register"))
        .json(&json!({"username": "big", "password": "p".repeat(100_000)}))
        .send()
        .await
        .unwrap();
    expect_error(huge, 413, "invalid_request").await;
}

on_both_backends! {
    async fn health_and_readiness_answer(db) {
        let app = spawn_with(db, |_| {}).await;
        assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
        let page = app.http.get(app.url("/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let app = spawn_app().await;
    let document: Value =
        app.http.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let routes = [
        ("post", "/api/auth/register"),
        ("post", "/api/auth/login"),
        ("post", "/api/auth/refresh"),
        ("post", "/api/auth/logout"),
        ("post", "/api/auth/logout-all"),
        ("get", "/api/me"),
        ("get", "/api/sessions"),
        ("delete", "/api/sessions/{sid}"),
        ("get", "/api/admin/sessions"),
        ("post", "/api/admin/sessions/{sid}/revoke"),
        ("post", "/api/admin/users/{uid}/kick"),
        ("post", "/api/admin/users/{uid}/ban"),
        ("delete", "/api/admin/users/{uid}/ban"),
        ("post", "/api/admin/revoke-all"),
        ("get", "/api/admin/audit"),
        ("get", "/ws"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
        ("get", "/"),
        ("get", "/admin"),
    ];
    for (method, path) in routes {
        assert!(document["paths"][path][method].is_object(), "{method} {path} is not documented");
    }
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}
