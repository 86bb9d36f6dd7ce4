//! `tether` as a real process: the binary, started with flags, its log read for
//! the address it bound, stopped with a signal.

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `tether` binary of this workspace, built (or found fresh) once per test run.
pub fn tether_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut build = Command::new(env!("CARGO"));
            build.current_dir(&workspace).args(["build", "--quiet", "-p", "tether", "--bin", "tether"]);
            if profile_dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build for the tether binary");
            assert!(status.success(), "cargo build of the tether binary failed");
            profile_dir.join("tether")
        })
        .clone()
}

/// An example program of the `tether` package (`server/examples/<name>.rs`), built
/// once per test run like the binary.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(&workspace).args(["build", "--quiet", "-p", "tether", "--example", name]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build for the example");
    assert!(status.success(), "cargo build of the example {name} failed");
    profile_dir.join("examples").join(name)
}

/// A `tether` command with these arguments, its output captured.
pub fn tether(args: &[&str]) -> Command {
    let mut command = Command::new(tether_binary());
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TETHER_") {
            command.env_remove(name);
        }
    }
    command
}

/// `tether serve` on a test database, set up as [`crate::test_config`] sets up an
/// in-process server (port 0, the test signing secret, cheap argon2, no rate limits),
/// and ready. A process has a metrics recorder of its own: in-process servers share
/// the test binary's.
pub async fn serve_on(db: &crate::TestDb) -> ServerProcess {
    let secret = db.dir.path().join("jwt-secret");
    std::fs::write(&secret, crate::JWT_SECRET).expect("write the test secret");
    let secret = secret.display().to_string();
    #[rustfmt::skip]
    let args: Vec<String> = [
        "--bind", "127.0.0.1:0",
        "--database-url", &db.url,
        "--jwt-secret-file", &secret,
        "--argon2-memory-kib", "8",
        "--argon2-iterations", "1",
        "--auth-per-ip-per-minute", "0",
        "--auth-per-username-per-minute", "0",
        "--upgrades-per-ip-per-minute", "0",
        "--ws-messages-per-second", "0",
    ]
    .map(str::to_owned)
    .into();
    // Starting may build the binary and waits on its log: off the async workers.
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("tether serve starts");
    let http = reqwest::Client::builder().timeout(crate::WAIT).build().unwrap();
    crate::wait_until_ready(&http, &server.base()).await;
    server
}

/// A running `tether serve`.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    /// Every JSON log line it printed so far (drained by [`ServerProcess::logs`]).
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl ServerProcess {
    /// Starts `tether serve --log-format json <args>` and waits for its `listening` line.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_with_env(args, &[])
    }

    /// As [`ServerProcess::start`], with these `TETHER_*` variables in its environment.
    /// Settings that only a newer server knows are best passed this way: an older one
    /// ignores an unknown variable, where it would refuse an unknown flag.
    pub fn start_with_env(args: &[&str], env: &[(String, String)]) -> ServerProcess {
        let mut all = vec!["serve", "--log-format", "json"];
        all.extend_from_slice(args);
        let mut command = tether(&all);
        command.envs(env.iter().map(|(name, value)| (name, value)));
        let mut child = command.spawn().expect("start tether serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    break;
                }
            }
        });
        let mut server = ServerProcess { child, addr: String::new(), lines, seen: Vec::new() };
        let listening = server.wait_for_log(|line| line["message"] == "listening", Duration::from_secs(60));
        server.addr = listening["addr"].as_str().expect("the listening line names the address").to_owned();
        server
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for a log line that matches, returning it.
    pub fn wait_for_log(&mut self, matches: impl Fn(&Value) -> bool, bound: Duration) -> Value {
        if let Some(found) = self.seen.iter().find(|line| matches(line)) {
            return found.clone();
        }
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let stderr = self.child.stderr.take().map(|mut err| {
                        let mut text = String::new();
                        let _ = std::io::Read::read_to_string(&mut err, &mut text);
                        text
                    });
                    panic!("no such log line within {bound:?}; saw {:#?}; stderr: {stderr:?}", self.seen);
                }
            }
        }
    }

    /// Every log line read so far.
    pub fn logs(&mut self) -> &[Value] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// SIGTERM, then the exit status (bounded).
    pub fn terminate(&mut self, bound: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success());
        self.wait(bound)
    }

    /// `kill -9`: no shutdown, no goodbye to its sockets; waits for the process to go.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "tether did not exit within {bound:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a tool to completion with no input, killed if it outlasts `bound`; returns
/// whether it succeeded and everything it printed (stdout, then stderr).
pub async fn run_bounded(
    mut command: tokio::process::Command,
    what: &str,
    bound: Duration,
) -> (bool, String) {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|error| panic!("start {what}: {error}"));
    let output = tokio::time::timeout(bound, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {bound:?}"))
        .unwrap_or_else(|error| panic!("wait for {what}: {error}"));
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}
