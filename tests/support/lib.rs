//! Test support: start a real Tether server on port 0 with a fresh database, and
//! talk to it with real HTTP and WebSocket clients. Every wait has a bound.

pub mod browser;
pub mod chaos;
pub mod history;
pub mod nodes;
pub mod process;
pub mod proxy;
pub mod services;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tether::{App, AppState, Config};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Held by the tests that load the whole machine (the fault-injection histories,
/// the mass revocations), so that in one test run they never overlap each other and
/// their timing bounds stay about the server, not about the neighbours.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bound on any single thing a test waits for.
pub const WAIT: Duration = Duration::from_secs(5);
pub const PASSWORD: &str = "correct horse battery";

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL
/// database that is dropped when this is.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> Arc<TestDb> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("tether.db").display());
        Arc::new(TestDb { url, dir, postgres: None })
    }

    /// None, after saying so, when `TETHER_TEST_DATABASE_URL` is not set. Under CI a
    /// missing variable or an unreachable server fails the test instead.
    pub async fn postgres(test: &str) -> Option<Arc<TestDb>> {
        let Ok(admin_url) = std::env::var("TETHER_TEST_DATABASE_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set TETHER_TEST_DATABASE_URL: PostgreSQL tests are required there"
            );
            eprintln!("skipped {test}: TETHER_TEST_DATABASE_URL is not set, PostgreSQL test not run");
            return None;
        };
        let name = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect_pg(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let url = database_url_with_name(&admin_url, &name);
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Arc::new(TestDb { url, dir, postgres: Some((admin_url, name)) }))
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

async fn connect_pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    tokio::time::timeout(WAIT, sqlx::PgConnection::connect(url))
        .await
        .unwrap_or_else(|_| panic!("PostgreSQL at TETHER_TEST_DATABASE_URL did not answer in {WAIT:?}"))
        .expect("connect to TETHER_TEST_DATABASE_URL")
}

fn database_url_with_name(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else { return };
        // Drop runs outside any async context we could borrow: use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut admin = connect_pg(&admin_url).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut admin)
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop test database: {dropped:?}");
        }
    }
}

/// The secret every test server signs with, so that tests can forge tokens.
pub const JWT_SECRET: &[u8] = b"test secret: forty-two bytes, no more, no less";

/// A configuration for tests: port 0, cheap argon2, the given database.
pub fn test_config(db: &TestDb) -> Config {
    let secret_file: PathBuf = db.dir.path().join("jwt-secret");
    if !secret_file.exists() {
        std::fs::write(&secret_file, JWT_SECRET).expect("write the test secret");
    }
    let mut config = Config::defaults();
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.database_url = db.url.clone();
    config.jwt_secret_file = Some(secret_file);
    config.argon2_memory_kib = 8;
    config.argon2_iterations = 1;
    // Every test client comes from 127.0.0.1: the rate-limit tests turn limits on.
    config.auth_per_ip_per_minute = 0;
    config.auth_per_username_per_minute = 0;
    config.upgrades_per_ip_per_minute = 0;
    config.ws_messages_per_second = 0;
    config
}

/// Puts every limit and timeout back to `tether serve`'s default (a test config
/// turns the rate limits off): for the tests of what the defaults let in.
pub fn with_default_limits(config: &mut Config) {
    let defaults = Config::defaults();
    config.auth_per_ip_per_minute = defaults.auth_per_ip_per_minute;
    config.auth_per_username_per_minute = defaults.auth_per_username_per_minute;
    config.upgrades_per_ip_per_minute = defaults.upgrades_per_ip_per_minute;
    config.ws_messages_per_second = defaults.ws_messages_per_second;
    assert_eq!(
        (config.registrations_per_ip_per_minute, config.refreshes_per_ip_per_minute),
        (defaults.registrations_per_ip_per_minute, defaults.refreshes_per_ip_per_minute),
        "test_config leaves the other limits at their defaults"
    );
}

/// An HTTP client whose connections come from `source` (any 127.x address reaches a
/// server bound to 127.0.0.1 over loopback): a second client address for a test.
pub fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .local_address(source.parse::<std::net::IpAddr>().expect("an IP address"))
        .build()
        .unwrap()
}

/// A raw TCP connection to `addr` from the address `source`.
pub async fn tcp_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    tokio::time::timeout(WAIT, socket.connect(addr)).await.expect("connect in time").expect("connect")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub db: Arc<TestDb>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(TestDb::sqlite(), |_| {}).await
}

pub async fn spawn_with(db: Arc<TestDb>, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(&db);
    adjust(&mut config);
    let app = App::build(config).await.expect("the server builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let app = TestApp {
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        state,
        db,
        stop: Some(stop),
        served: Some(served),
    };
    app.wait_until_ready().await;
    app
}

/// What a login hands a client.
#[derive(Clone, Debug)]
pub struct Login {
    pub username: String,
    pub user_id: String,
    pub session_id: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Login {
    pub fn from_body(username: &str, body: &Value) -> Login {
        Login {
            username: username.to_owned(),
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
            session_id: body["session_id"].as_str().unwrap().to_owned(),
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A PostgreSQL node is ready once its cluster listener is in sync: wait for it.
    pub async fn wait_until_ready(&self) {
        wait_until_ready(&self.http, &self.base).await;
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Stops the server the way a signal would, and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(15), served)
                .await
                .expect("the server stops in time")
                .expect("the server task did not panic")
                .expect("the server stopped cleanly");
        }
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).json(&body).send().await.unwrap()
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
        let request = self.http.post(self.url(path)).bearer_auth(token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    pub async fn get_me(&self, token: &str) -> reqwest::Response {
        self.get_auth("/api/me", token).await
    }

    pub async fn register(&self, username: &str) -> reqwest::Response {
        self.post_json("/api/auth/register", json!({"username": username, "password": PASSWORD})).await
    }

    pub async fn login(&self, username: &str) -> Login {
        let response =
            self.post_json("/api/auth/login", json!({"username": username, "password": PASSWORD})).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        Login::from_body(username, &response.json().await.unwrap())
    }

    /// Registers a fresh player and logs it in.
    pub async fn new_player(&self) -> Login {
        let username = unique_name("p");
        assert_eq!(self.register(&username).await.status(), StatusCode::CREATED);
        self.login(&username).await
    }

    /// Creates a user straight in the store, without a login or any rate-limited call.
    pub async fn create_user(&self, username: &str, role: &str) {
        let hash = self.state.passwords.hash(PASSWORD.to_owned()).await.unwrap();
        let created = self
            .state
            .store
            .create_user(tether::store::NewUser {
                id: uuid::Uuid::new_v4(),
                username,
                password_hash: &hash,
                role,
                created_at: tether::store::now(),
            })
            .await
            .unwrap();
        assert!(matches!(created, tether::store::CreateUser::Created));
    }

    /// Open sockets of a session on this server, as its registry counts them.
    pub fn open_sockets(&self, session_id: &str) -> usize {
        let id: tether_shared::SessionId = session_id.parse().unwrap();
        self.state.sessions.get(id).map_or(0, |entry| entry.open_sockets())
    }

    /// A socket over a TCP connection with a tiny receive buffer, for a client that
    /// falls behind quickly; `welcome` already read.
    pub async fn slow_reader_ws(&self, token: &str) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        let mut request = self.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        let (stream, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)))
                .await
                .expect("the upgrade answers in time")
                .expect("the upgrade succeeds");
        let mut ws = WsClient { stream, protocol: None };
        assert_eq!(ws.next_json().await["type"], "welcome");
        ws
    }

    /// Creates an admin straight in the store (as `tether user create --admin` does)
    /// and logs it in.
    pub async fn new_admin(&self) -> Login {
        let username = unique_name("a");
        self.create_user(&username, "admin").await;
        self.login(&username).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_json("/api/auth/refresh", json!({"refresh_token": refresh_token})).await
    }

    /// A socket authenticated by the `Authorization` header; `welcome` already read.
    pub async fn connect_ws(&self, token: &str) -> WsClient {
        let mut ws = self.ws_with(&[("authorization", &format!("Bearer {token}"))], "").await;
        let welcome = ws.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws
    }

    /// An upgrade with these headers and query; nothing read yet.
    pub async fn ws_with(&self, headers: &[(&str, &str)], query: &str) -> WsClient {
        self.try_ws_with(headers, query).await.expect("the upgrade succeeds")
    }

    pub async fn try_ws_with(
        &self,
        headers: &[(&str, &str)],
        query: &str,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("{}{query}", self.ws_url()).into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let (stream, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the upgrade answers in time")?;
        let protocol =
            response.headers().get("sec-websocket-protocol").map(|value| value.to_str().unwrap().to_owned());
        Ok(WsClient { stream, protocol })
    }
}

/// A login of `username` at the server `base` (a process, or one node of several).
pub async fn login_at(http: &reqwest::Client, base: &str, username: &str) -> Login {
    let response = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "login of {username} on {base}");
    Login::from_body(username, &response.json().await.unwrap())
}

/// A fresh player registered and logged in at the server `base`.
pub async fn register_and_login_at(http: &reqwest::Client, base: &str) -> Login {
    let username = unique_name("p");
    let registered = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED, "register {username} on {base}");
    login_at(http, base, &username).await
}

/// A socket to the server at `addr` (a `tether serve` process, say), authenticated by
/// the `Authorization` header; `welcome` already read.
pub async fn connect_ws_at(addr: &str, token: &str) -> WsClient {
    let mut socket = upgrade_at(addr, token).await;
    let welcome = socket.next_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    socket
}

/// A completed upgrade at `addr` with `token` in the `Authorization` header, nothing
/// read yet: a refused token still completes it, and closes with its code.
pub async fn upgrade_at(addr: &str, token: &str) -> WsClient {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the upgrade answers in time")
        .expect("the upgrade completes");
    WsClient { stream, protocol: None }
}

/// Polls `/readyz` until it answers 200, within [`WAIT`].
pub async fn wait_until_ready(http: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
        if ready {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{base} did not become ready within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// A close frame as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl WsClient {
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send a frame");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next text frame, as JSON; panics on a close or after [`WAIT`].
    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    /// The next message of this `type`, skipping others (snapshots, presence...).
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no {kind:?} message within {WAIT:?}");
            let message = self.next_json().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// The next message matching `accept`, skipping others.
    pub async fn next_matching(&mut self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no message {what} within {WAIT:?}");
            let message = self.next_json().await;
            if accept(&message) {
                return message;
            }
        }
    }

    /// The next binary frame, skipping text frames; panics on a close or after [`WAIT`].
    pub async fn next_binary(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message =
                tokio::time::timeout_at(deadline, self.stream.next()).await.expect("a binary frame in time");
            match message {
                Some(Ok(Message::Binary(bytes))) => return bytes.to_vec(),
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    pub async fn next_text(&mut self) -> String {
        loop {
            let message =
                tokio::time::timeout(WAIT, self.stream.next()).await.expect("a frame arrives in time");
            match message {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Waits up to `bound` for the close frame, skipping other frames.
    pub async fn next_close_within(&mut self, bound: Duration) -> Closed {
        let found = tokio::time::timeout(bound, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return Closed { code: u16::from(frame.code), reason: frame.reason.to_string() };
                    }
                    Some(Ok(Message::Close(None))) => return Closed { code: 1005, reason: String::new() },
                    Some(Ok(_)) => continue,
                    other => panic!("the connection ended without a close frame: {other:?}"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no close frame within {bound:?}"))
    }

    pub async fn next_close(&mut self) -> Closed {
        self.next_close_within(WAIT).await
    }

    /// Every text frame until the connection ends, and its close frame if it had one
    /// (None: it was dropped or reset without one, as an aborted socket is).
    pub async fn frames_until_end(&mut self) -> (Vec<String>, Option<Closed>) {
        let mut texts = Vec::new();
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                    Some(Ok(Message::Close(frame))) => {
                        return Some(frame.map_or(Closed { code: 1005, reason: String::new() }, |frame| {
                            Closed { code: u16::from(frame.code), reason: frame.reason.to_string() }
                        }));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
        .expect("the connection ends in time");
        (texts, closed)
    }

    /// The frames before the close frame, and the close.
    pub async fn frames_until_close(&mut self) -> (Vec<String>, Closed) {
        let mut texts = Vec::new();
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return Closed { code: u16::from(frame.code), reason: frame.reason.to_string() };
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("the connection ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("a close frame arrives in time");
        (texts, closed)
    }
}

/// Asserts the contract's error body and returns it.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!((got, body["error"].as_str().unwrap_or("<none>")), (status, code), "{body}");
    assert!(body["message"].is_string(), "{body}");
    body
}
