//! The Artillery setup that load testers bring to a server (`client-demo/artillery/`),
//! run for a few seconds against a real one: its scenario, its processor and the
//! contract it relies on have to keep agreeing.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tether_e2e::*;

fn artillery_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../client-demo/artillery")
}

fn artillery_bin() -> PathBuf {
    artillery_dir().join("node_modules/artillery/bin/run")
}

/// Whether the tooling is installed. Outside CI a missing one is a skip, said out
/// loud; CI installs it, so there it fails.
fn artillery_available(test: &str) -> bool {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let packages = artillery_bin().exists();
    if node && packages {
        return true;
    }
    let missing = format!(
        "node: {node}, `PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix client-demo/artillery`: {packages}"
    );
    assert!(std::env::var_os("CI").is_none(), "CI must provide the Artillery tooling ({missing})");
    eprintln!("skipped {test}: Artillery tooling missing ({missing}); see client-demo/README.md");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artillery_smoke_run_logs_every_player_in_plays_and_gets_a_pong_for_every_ping() {
    if !artillery_available("an_artillery_smoke_run") {
        return;
    }
    let app = spawn_app().await;
    let report = app.db.dir.path().join("artillery-report.json");
    // The smoke environment: a 3 s phase of 2 arrivals a second, each playing 2 s.
    let variables = json!({"register": true, "password": PASSWORD}).to_string();
    let mut command = tokio::process::Command::new("node");
    command
        .current_dir(artillery_dir())
        .arg(artillery_bin())
        .args(["run", "--environment", "smoke", "--target", &app.base, "--variables", &variables])
        .arg("--output")
        .arg(&report)
        .arg("scenario.yml")
        .env("ARTILLERY_DISABLE_TELEMETRY", "true");
    let (succeeded, printed) =
        tether_e2e::process::run_bounded(command, "artillery", Duration::from_secs(120)).await;
    assert!(succeeded, "artillery failed:\n{printed}");

    let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("the --output report"))
        .expect("the report is JSON");
    let counters = report["aggregate"]["counters"].as_object().expect("aggregate counters");
    let count = |name: &str| counters.get(name).and_then(Value::as_u64).unwrap_or(0);
    let errors: Vec<_> = counters.iter().filter(|(name, _)| name.starts_with("errors.")).collect();
    assert!(errors.is_empty(), "errors in the run: {errors:?}\n{printed}");

    let players = count("vusers.created");
    assert!(players >= 2, "too few players to say anything: {players}\n{printed}");
    assert_eq!((count("vusers.completed"), count("vusers.failed")), (players, 0), "{printed}");
    for figure in
        ["tether.logins", "tether.sockets.welcomed", "tether.rooms.joined", "tether.sockets.closed_normally"]
    {
        assert_eq!(count(figure), players, "{figure}\n{printed}");
    }
    let pings = count("tether.pings.sent");
    assert!(pings >= players, "each player pings: {pings} pings\n{printed}");
    assert_eq!(count("tether.pongs"), pings, "a pong for every ping\n{printed}");
    assert!(count("tether.inputs.sent") > 0 && count("tether.snapshots") > 0, "no play\n{printed}");
    for latency in ["tether.login_ms", "tether.welcome_ms", "tether.ping_rtt_ms"] {
        let recorded = report["aggregate"]["summaries"][latency]["count"].as_u64();
        assert!(recorded.is_some_and(|n| n > 0), "{latency} not recorded\n{printed}");
    }
}
