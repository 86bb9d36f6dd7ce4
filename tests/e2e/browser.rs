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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_players_on_binary_frames_see_each_other_move_at_the_tick_rate() {
    game_scenario("game_binary.mjs").await;
}

/// Runs one of the Node unit-test files in tests/browser (no browser needed).
async fn node_unit_tests(script: &str) {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node {
        assert!(std::env::var_os("CI").is_none(), "CI must provide node");
        eprintln!("skipped {script}: node is missing");
        return;
    }
    let (ok, output) = run_driver(script, &[]).await;
    assert!(ok, "node's test runner failed on {script}:\n{output}");
    assert!(output.contains("# fail 0"), "no test ran or one failed in {script}:\n{output}");
}

/// The game page's reader of binary snapshot frames: the documented frame byte for byte,
/// full views, refusals of broken frames and of deltas from a view it does not hold.
#[tokio::test]
async fn the_game_page_decodes_binary_snapshot_frames_and_refuses_broken_ones() {
    node_unit_tests("snapshot_codec.test.mjs").await;
}

/// The client library hands binary frames over untouched and sends any extra field a
/// game asks for (`encoding` on join, `ack` on input).
#[tokio::test]
async fn the_client_library_passes_binary_frames_and_extra_fields_through() {
    node_unit_tests("tether_client_frames.test.mjs").await;
}
