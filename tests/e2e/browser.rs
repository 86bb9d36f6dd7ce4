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
