//! The pages in a real headless browser.

use tether_e2e::browser::{browser_available, run_driver};
use tether_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_kicks_a_connected_player_from_the_console_and_the_socket_gets_4004_with_the_typed_reason() {
    if !browser_available("an_admin_kicks_a_connected_player_from_the_console") {
        return;
    }
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    let player = app.new_player().await;
    let mut socket = app.connect_ws(&player.access_token).await;
    let reason = "typed into the console";
    let (ok, output) = run_driver(
        "admin_kick.mjs",
        &[
            "--base",
            &app.base,
            "--admin-user",
            &admin.username,
            "--admin-password",
            PASSWORD,
            "--target-user",
            &player.username,
            "--reason",
            reason,
        ],
    )
    .await;
    assert!(ok, "the console did not kick: {output}");
    let closed = socket.next_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4004, format!("kicked: {reason}").as_str()));
}

/// Runs one of the game page's scenarios against a fresh server.
async fn game_scenario(script: &str) {
    if !browser_available(script) {
        return;
    }
    let app = spawn_app().await;
    let (ok, output) = run_driver(script, &["--base", &app.base]).await;
    assert!(ok, "{script} failed: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_players_log_in_and_each_sees_the_other_move() {
    game_scenario("game_two_players.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_whose_session_is_revoked_elsewhere_sees_the_4001_overlay_and_stays_disconnected() {
    game_scenario("game_revoked.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_player_logged_in_through_the_refresh_cookie() {
    game_scenario("game_reload.mjs").await;
}

/// The client library's own rules for a node that cannot vouch for its sessions
/// (close 1013, 503 `not_ready` / `busy`): retried with jittered backoff, never a
/// logout. Pure decisions, so Node's test runner checks them without a browser.
#[tokio::test]
async fn the_client_library_retries_a_stale_node_without_logging_the_player_out() {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node {
        assert!(std::env::var_os("CI").is_none(), "CI must provide node");
        eprintln!("skipped: node is missing");
        return;
    }
    let (ok, output) = run_driver("tether_client_retry.test.mjs", &[]).await;
    assert!(ok, "node's test runner failed:\n{output}");
    assert!(output.contains("# fail 0"), "no test ran or one failed:\n{output}");
}
