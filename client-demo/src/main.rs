//! `loadgen`: puts a Tether server on this machine under WebSocket and HTTP load and
//! reports what it measured as HDR percentiles.
//!
//! Scenarios (one subcommand each, see `README.md`): `connect` (authenticated
//! sockets held open), `play` (rooms, inputs, snapshots, pings), `revoke` (admin
//! revocation fan-out to close frames), `http` (`GET /api/me` or
//! `POST /api/auth/introspect`, optionally against `GET /healthz`), `hostile` (honest
//! clients beside attacks) and `feed` (logouts on one node to their events on another
//! node's revocation stream). Every run is bounded in count and in time, and only ever
//! talks to loopback addresses.
//!
//! Modules: [`cli`] flags, [`target`] the loopback-only server address and source
//! addresses, [`api`] the HTTP calls, [`bots`] accounts and logins, [`conn`] one
//! WebSocket connection, [`stats`] histograms and counters, [`report`] the summary
//! table and the JSON file, [`plot`] the SVG chart, [`progress`] the progress bars,
//! [`scenario`] the scenarios.

mod api;
mod bots;
mod cli;
mod conn;
mod plot;
mod progress;
mod report;
mod scenario;
mod stats;
mod target;

use clap::Parser as _;
use std::process::ExitCode;

/// Thousands of players each decoding 20 frames a second: glibc's malloc was a tenth
/// of the load generator's CPU in a profile of `play`, mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let open_files = raise_open_file_limit();
    match scenario::run(cli, open_files).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-file limit to the hard one: every socket is a descriptor,
/// and the usual soft limit (1024) would end a run long before the ports do.
fn raise_open_file_limit() -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    let raised = before.and_then(|(_, hard)| rlimit::increase_nofile_limit(hard).ok());
    match (before, raised) {
        (Some((soft, hard)), Some(now)) => {
            if now > soft {
                eprintln!("open-file limit: {now} (raised from {soft}; hard limit {hard})");
            } else {
                eprintln!("open-file limit: {now} (hard limit {hard})");
            }
            now
        }
        (Some((soft, hard)), None) => {
            eprintln!("open-file limit: {soft} (could not raise it to the hard limit {hard})");
            soft
        }
        _ => {
            eprintln!("open-file limit: unknown");
            0
        }
    }
}
