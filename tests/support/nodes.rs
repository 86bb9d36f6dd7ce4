//! `tether serve` nodes for the fault-injection tests: configured through
//! `TETHER_*` variables (an older server ignores the ones it does not know, where
//! it would refuse an unknown flag), optionally behind a [`DbProxy`] of their own,
//! and able to die by `kill -9` and come back on the same database with the same
//! node id on a new port.

use crate::process::{ServerProcess, tether};
use crate::proxy::{DbProxy, host_port};
use crate::{JWT_SECRET, TestDb};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// How long a node may take to answer `/readyz` 200 after it logged `listening`.
pub const READY_BOUND: Duration = Duration::from_secs(20);

/// Writes the shared signing secret into the database's temp dir (once).
pub fn secret_file(db: &TestDb) -> PathBuf {
    let path = db.dir.path().join("jwt-secret");
    if !path.exists() {
        std::fs::write(&path, JWT_SECRET).expect("write the signing secret");
    }
    path
}

/// The environment of a test node: cheap hashing, every limit off, the given
/// staleness bound, and everything else the contract lets a load test turn off.
pub fn serve_env(database_url: &str, secret: &Path, node_id: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("TETHER_BIND", "127.0.0.1:0"),
        ("TETHER_DATABASE_URL", database_url),
        ("TETHER_JWT_SECRET_FILE", secret.to_str().expect("a UTF-8 temp path")),
        ("TETHER_NODE_ID", node_id),
        // argon2's floor is 8 KiB per lane: thousands of logins cost seconds.
        ("TETHER_ARGON2_MEMORY_KIB", "8"),
        ("TETHER_ARGON2_ITERATIONS", "1"),
        ("TETHER_AUTH_PER_IP_PER_MINUTE", "0"),
        ("TETHER_AUTH_PER_USERNAME_PER_MINUTE", "0"),
        ("TETHER_UPGRADES_PER_IP_PER_MINUTE", "0"),
        ("TETHER_WS_MESSAGES_PER_SECOND", "0"),
        // v2: the knobs a load test from one machine turns off (API.md, "Limits").
        ("TETHER_MAX_SOCKETS_PER_SESSION", "0"),
        ("TETHER_MAX_CONNECTIONS", "0"),
        ("TETHER_MAX_CONNECTIONS_PER_IP", "0"),
        // v2 limits registrations and refreshes per address too; the contract leaves
        // their flags' names to the README, so these are the names the v1 pattern
        // gives. An unknown variable is ignored, and a 429 only makes the run thinner.
        ("TETHER_REGISTRATIONS_PER_IP_PER_MINUTE", "0"),
        ("TETHER_REFRESHES_PER_IP_PER_MINUTE", "0"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    env.sort();
    env
}

/// Sets (or replaces) one variable.
pub fn set_env(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(existing, _)| existing != name);
    env.push((name.to_owned(), value.to_owned()));
}

/// Runs a `tether` subcommand to completion, `stdin` written to it; panics with its
/// output if it fails.
pub async fn cli(args: Vec<String>, stdin: Option<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = tether(&args).stdin(Stdio::piped()).spawn().expect("run tether");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = &stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "tether {args:?} failed: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .expect("the tether command did not panic")
}

/// `tether migrate`, then one admin per name, made as an operator would.
pub async fn prepare_database(url: &str, admins: &[&str], password: &str) {
    cli(vec!["migrate".into(), "--database-url".into(), url.into()], None).await;
    for admin in admins {
        let args =
            ["user", "create", "--username", admin, "--password-stdin", "--admin", "--database-url", url];
        cli(args.iter().map(|s| s.to_string()).collect(), Some(format!("{password}\n"))).await;
    }
}

/// The upstream PostgreSQL address of `TETHER_TEST_DATABASE_URL`.
pub async fn postgres_addr(url: &str) -> std::net::SocketAddr {
    let host_port = host_port(url).expect("a host in the PostgreSQL URL");
    tokio::net::lookup_host(host_port.as_str())
        .await
        .expect("resolve the PostgreSQL host")
        .next()
        .expect("an address for the PostgreSQL host")
}

/// Node A straight on the test database and node B behind a [`DbProxy`] a test can
/// cut, both with `--max-staleness 1s`, started and ready.
pub async fn node_and_cuttable_node(db: &TestDb) -> (Node, Node) {
    prepare_database(&db.url, &[], crate::PASSWORD).await;
    let secret = secret_file(db);
    let mut env_a = serve_env(&db.url, &secret, "a");
    set_env(&mut env_a, "TETHER_MAX_STALENESS", "1s");
    let a = Node::start("a", env_a, None).await;
    let proxy = DbProxy::start(postgres_addr(&db.url).await).await;
    let mut env_b = serve_env(&proxy.url_for(&db.url), &secret, "b");
    set_env(&mut env_b, "TETHER_MAX_STALENESS", "1s");
    let b = Node::start("b", env_b, Some(proxy)).await;
    (a, b)
}

/// Cuts the node's database so that it hangs (no answer, no reset), and waits (10 s at
/// most) for the node's `/readyz` to say it is stale.
pub async fn cut_until_stale(node: &Node, http: &reqwest::Client) {
    node.proxy.as_ref().expect("a node behind a proxy").cut(crate::proxy::CutMode::Blackhole);
    let base = node.base().expect("a running node");
    let stale_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/readyz")).send().await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < stale_by, "node {} never turned stale", node.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node: its settings, its current process (None while killed) and address.
pub struct Node {
    pub name: String,
    pub env: Vec<(String, String)>,
    pub proxy: Option<DbProxy>,
    process: Mutex<Option<ServerProcess>>,
    addr: RwLock<Option<String>>,
}

impl Node {
    /// Starts the node and waits until it is ready.
    pub async fn start(name: &str, env: Vec<(String, String)>, proxy: Option<DbProxy>) -> Node {
        let node =
            Node { name: name.to_owned(), env, proxy, process: Mutex::new(None), addr: RwLock::new(None) };
        node.spawn().await.unwrap_or_else(|error| panic!("{error}"));
        node
    }

    /// `host:port` of the running process.
    pub fn addr(&self) -> Option<String> {
        self.addr.read().unwrap().clone()
    }

    pub fn base(&self) -> Option<String> {
        self.addr().map(|addr| format!("http://{addr}"))
    }

    /// Starts a process (a node that is not running) and waits for `/readyz` 200.
    pub async fn spawn(&self) -> Result<(), String> {
        let env = self.env.clone();
        let process = tokio::task::spawn_blocking(move || ServerProcess::start_with_env(&[], &env))
            .await
            .map_err(|error| format!("{} did not start: {error}", self.name))?;
        let addr = process.addr.clone();
        *self.process.lock().unwrap() = Some(process);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        if !ready_within(&http, &format!("http://{addr}"), READY_BOUND).await {
            return Err(format!("{} ({addr}) did not answer /readyz 200 within {READY_BOUND:?}", self.name));
        }
        *self.addr.write().unwrap() = Some(addr);
        Ok(())
    }

    /// `kill -9`: clients find nothing at the old address from now on.
    pub async fn kill(&self) {
        *self.addr.write().unwrap() = None;
        let process = self.process.lock().unwrap().take();
        if let Some(mut process) = process {
            let _ = tokio::task::spawn_blocking(move || process.kill_hard()).await;
        }
    }
}

/// Polls `/readyz` until 200, for at most `bound`.
pub async fn ready_within(http: &reqwest::Client, base: &str, bound: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
