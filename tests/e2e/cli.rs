//! The `tether` binary: `migrate`, `user create`, and `serve`'s first start.

use serde_json::{Value, json};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;
use tether_e2e::process::{ServerProcess, tether};
use tether_e2e::*;

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("tether.db").display())
}

fn create_user(url: &str, name: &str, password: &str, admin: bool) -> std::process::Output {
    let mut args = vec!["user", "create", "--username", name, "--password-stdin", "--database-url", url];
    if admin {
        args.push("--admin");
    }
    let mut child = tether(&args).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

async fn login(base: &str, username: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .timeout(WAIT)
        .send()
        .await
        .unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_fresh_serve_creates_its_secret_and_a_first_admin_who_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let mut server = ServerProcess::start(&["--bind", "127.0.0.1:0", "--database-url", &url]);
    let secret = dir.path().join("tether.db.jwt-secret");
    let password_file = dir.path().join("tether.db.admin-password");
    assert_eq!((mode(&secret), mode(&password_file)), (0o600, 0o600), "owner-only files");
    let password = std::fs::read_to_string(&password_file).unwrap().trim().to_owned();
    let logged = server.wait_for_log(|line| line["username"] == "admin", WAIT);
    assert_eq!(logged["password"], password.as_str(), "the password is printed once in the log");

    let response = login(&server.base(), "admin", &password).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
    let token = body["access_token"].as_str().unwrap();
    for line in server.logs() {
        assert!(!line.to_string().contains(token), "a token reached the log: {line}");
    }
    let mut socket = connect_ws_at(&server.addr, token).await;
    let stopped_at = std::time::Instant::now();
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
    let closed = socket.next_close().await;
    assert_eq!(closed.code, 1001, "open sockets are told the server is going away");
    assert!(closed.reason.starts_with("server shutting down: reconnect in "), "{}", closed.reason);

    // A second start keeps the secret and does not make another admin.
    let mut again = ServerProcess::start(&["--bind", "127.0.0.1:0", "--database-url", &url]);
    assert_eq!(login(&again.base(), "admin", &password).await.status(), 200);
    assert!(again.logs().iter().all(|line| line["username"] != "admin"));
}

#[tokio::test]
async fn migrate_and_user_create_prepare_a_database_that_serve_uses() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let migrated = tether(&["migrate", "--database-url", &url]).output().unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(dir.path().join("tether.db").exists());

    let created = create_user(&url, "boss", "boss password", true);
    assert!(created.status.success(), "{created:?}");
    let again = create_user(&url, "BOSS", "another password", false);
    assert!(!again.status.success(), "a taken username is refused");
    let short = create_user(&url, "tiny", "short", false);
    assert!(!short.status.success(), "a short password is refused");

    let server = ServerProcess::start(&["--bind", "127.0.0.1:0", "--database-url", &url]);
    let body: Value = login(&server.base(), "boss", "boss password").await.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
    assert!(!dir.path().join("tether.db.admin-password").exists(), "an admin existed: none was generated");
}

#[tokio::test]
async fn create_many_makes_bots_that_share_one_password_hashed_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let create = |count: &str| {
        let args = [
            "user",
            "create-many",
            "--prefix",
            "bot",
            "--count",
            count,
            "--password-stdin",
            "--database-url",
            &url,
        ];
        let mut child = tether(&args).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"bot password\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let first = create("300");
    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("created 300 players"));
    let second = create("310");
    assert!(String::from_utf8_lossy(&second.stdout).contains("created 10 players (300 names were taken)"));

    // Argon2 salts every hash: two hashings of one password never give the same
    // string. So every bot of one run storing the very same string is the proof that
    // the run hashed once, and the second run's own string shows it was hashed anew.
    let hashes = stored_password_hashes(&url, "bot").await;
    assert_eq!(hashes.len(), 310);
    let first_run = &hashes["bot1"];
    assert!(first_run.starts_with("$argon2id$"), "{first_run}");
    for n in 1..=300 {
        assert_eq!(&hashes[&format!("bot{n}")], first_run, "bot{n} has a hash of its own");
    }
    let second_run = &hashes["bot301"];
    assert_ne!(second_run, first_run, "a second run hashes again, with a salt of its own");
    for n in 301..=310 {
        assert_eq!(&hashes[&format!("bot{n}")], second_run, "bot{n} has a hash of its own");
    }

    let server = ServerProcess::start(&["--bind", "127.0.0.1:0", "--database-url", &url]);
    for bot in ["bot1", "bot299", "bot301", "bot310"] {
        let body: Value = login(&server.base(), bot, "bot password").await.json().await.unwrap();
        assert_eq!(body["user"]["role"], "player", "{bot}: {body}");
    }
}

/// Every user whose name starts with `prefix`, and the password hash stored for it.
async fn stored_password_hashes(sqlite_url: &str, prefix: &str) -> std::collections::HashMap<String, String> {
    use sqlx::Connection as _;
    const HASHES: &str = "SELECT username, password_hash FROM users WHERE username LIKE $1 || '%'";
    let mut db = sqlx::SqliteConnection::connect(sqlite_url).await.expect("open the database");
    let rows: Vec<(String, String)> =
        sqlx::query_as(HASHES).bind(prefix).fetch_all(&mut db).await.expect("read the users");
    rows.into_iter().collect()
}

#[tokio::test]
async fn serve_on_postgres_requires_a_secret_file() {
    let Some(db) = TestDb::postgres("serve_on_postgres_requires_a_secret_file").await else { return };
    let output = tether(&["serve", "--bind", "127.0.0.1:0", "--database-url", &db.url]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--jwt-secret-file"), "{stderr}");
}

#[tokio::test]
async fn flags_are_also_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let mut command = tether(&["serve", "--log-format", "json"]);
    command
        .env("TETHER_BIND", "127.0.0.1:0")
        .env("TETHER_DATABASE_URL", &url)
        .env("TETHER_ACCESS_TTL", "90s");
    let mut child = command.spawn().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let addr = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .find(|line| line["message"] == "listening")
        .and_then(|line| line["addr"].as_str().map(str::to_owned))
        .expect("a listening line");
    let password = std::fs::read_to_string(dir.path().join("tether.db.admin-password")).unwrap();
    let body: Value = login(&format!("http://{addr}"), "admin", password.trim()).await.json().await.unwrap();
    assert_eq!(body["expires_in"], 90);
    let _ = child.kill();
    let _ = child.wait();
}
