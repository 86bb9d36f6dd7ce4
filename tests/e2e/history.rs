//! Seeded fault-injection histories against real `tether serve` processes: a
//! schedule of players, admins and faults is run while every operation, frame and
//! fault is recorded, and the record alone is then checked against the contract's
//! revocation rules (see `tether_e2e::history` for the rules, `tether_e2e::chaos`
//! for the schedule).
//!
//! Each run prints its seed; `TETHER_HISTORY_SEED=<seed>` replays its schedule and
//! `TETHER_HISTORY_SECONDS=<n>` makes it longer (default 45 s). The full history
//! of every run is written under the target directory, and its path printed.
//! `TETHER_HISTORY_SLACK_MS` widens the 500 ms allowed for the test machine.

use std::sync::Arc;
use tether_e2e::TestDb;
use tether_e2e::chaos::{self, Settings, Shape};
use tether_e2e::history::{self, Bounds, Log, Outcome};

/// Runs `shape` for the configured seed and length, then checks the log.
async fn run_and_check(shape: Shape, db: Arc<TestDb>) {
    let _alone = tether_e2e::HEAVY.lock().await;
    let settings = Settings::from_env();
    let seed = settings.seed;
    let steps = chaos::plan(&shape, &settings);
    eprintln!(
        "history of {}: seed {seed:#x}, {} s; replay with {}",
        shape.name,
        settings.duration.as_secs(),
        settings.replay()
    );
    eprintln!("plan of seed {seed:#x}: {}", chaos::describe_plan(&steps));
    let result = chaos::run(shape, &settings, db).await;
    let log = &result.log;
    let bounds = Bounds::from_env();
    let violations = history::check(log, bounds);
    eprintln!("history of seed {seed:#x}: {}", history::summary(log));

    // A replay of a seed may turn out differently: a failed run's file is kept apart,
    // so that the next run of the same seed cannot overwrite the evidence.
    let outcome = if violations.is_empty() { "passed" } else { "FAILED" };
    let started =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_secs());
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("history-{}-{seed:#x}-{outcome}-{started}.txt", shape.name.replace(' ', "-")));
    let mut text = format!("seed {seed:#x}, {}; replay with {}\n", shape.name, settings.replay());
    text.push_str(&history::summary(log));
    text.push_str("\n\n");
    if !violations.is_empty() {
        text.push_str(&history::report(log, &violations, &bounds, usize::MAX));
        text.push('\n');
    }
    text.push_str(&history::dump(log));
    let written = match std::fs::write(&file, text) {
        Ok(()) => file.display().to_string(),
        Err(error) => format!("(not written: {error})"),
    };
    eprintln!("full history of seed {seed:#x}: {written}");

    let mut failures = Vec::new();
    if !result.harness_errors.is_empty() {
        failures.push(format!(
            "the harness itself failed, so the history proves little: {:?}",
            result.harness_errors
        ));
    }
    let thin = too_little(log, &shape);
    if !thin.is_empty() {
        failures.push(format!("the run did too little to judge: {}", thin.join(", ")));
    }
    if !violations.is_empty() {
        failures.push(history::report(log, &violations, &bounds, 8));
    }
    assert!(
        failures.is_empty(),
        "history check failed for seed {seed:#x} ({}); replay with {}\n{}\n\n{}\nfull history: {written}",
        shape.name,
        settings.replay(),
        history::summary(log),
        failures.join("\n\n"),
    );
}

/// A run that did nothing proves nothing: what it should have done and did not.
fn too_little(log: &Log, shape: &Shape) -> Vec<String> {
    let ok = |kind: &str| {
        log.ops
            .iter()
            .filter(|op| format!("{:?}", op.kind).starts_with(kind))
            .filter(|op| {
                matches!(op.outcome, Outcome::Http { status: 200..=299, .. } | Outcome::Welcome { .. })
            })
            .count()
    };
    let faults = |kind: fn(&history::FaultKind) -> bool| log.faults.iter().filter(|f| kind(&f.kind)).count();
    let postgres = usize::from(shape.backend == chaos::Backend::Postgres);
    let figures = [
        ("logins", ok("Login"), 50),
        ("sockets", ok("Upgrade"), 20),
        ("logouts", ok("Logout"), 3),
        ("admin revocations", ok("RevokeSession") + ok("Kick") + ok("Ban"), 3),
        ("revoke-alls", ok("RevokeAll"), 1),
        ("hang-ups", log.ops.iter().filter(|op| op.outcome == Outcome::HungUp).count(), 3),
        ("restarts", faults(|kind| matches!(kind, history::FaultKind::Down { .. })), 1),
        ("cuts", faults(|kind| matches!(kind, history::FaultKind::Cut { .. })), postgres),
        (
            "listener resets",
            faults(|kind| matches!(kind, history::FaultKind::ListenerTerminated { .. })),
            postgres,
        ),
    ];
    figures
        .iter()
        .filter(|(_, got, floor)| got < floor)
        .map(|(what, got, floor)| format!("{what}: {got} (want at least {floor})"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_history_on_three_postgres_nodes_with_cuts_kills_and_hang_ups_keeps_every_revocation() {
    let Some(db) = TestDb::postgres("history::three_postgres_nodes").await else { return };
    run_and_check(chaos::CLUSTER, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_history_on_one_sqlite_node_with_kills_and_hang_ups_keeps_every_revocation() {
    run_and_check(chaos::SINGLE, TestDb::sqlite()).await;
}
