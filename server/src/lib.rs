//! Tether: one login for the web API and the game socket, revocable at once.
//!
//! - [`config`]: the `tether` command line and every `serve` setting.
//! - [`app`]: state, router, listener, background upkeep, graceful stop.
//! - [`auth`]: access tokens, refresh tokens, passwords, the session extractor.
//! - [`revocation`]: why sessions end, and the one path a revoking call takes:
//!   handler -> revocation -> store -> bus -> registry -> sockets.
//! - [`sessions`]: the in-memory session registry and the sockets it can close.
//! - [`bans`]: the bans in force, in memory, for close codes.
//! - [`limits`]: rate limits per client address, per username, per socket;
//!   [`client_ip`]: who the client is behind trusted proxies.
//! - [`serve`]: the accept loop: connection caps, header and idle timeouts.
//! - [`store`]: SQLite or PostgreSQL, one implementation over both.
//! - [`cluster`]: several nodes on one PostgreSQL: the revocation log, followed,
//!   and the bus that wakes the followers.
//! - [`http`], [`ws`]: the routes; [`game`]: rooms and their tick loops.
//! - [`bootstrap`]: the signing secret and the first admin.
//! - [`telemetry`]: logs, as text or JSON lines.

pub mod app;
pub mod auth;
pub mod bans;
pub mod bootstrap;
pub mod client_ip;
pub mod cluster;
pub mod config;
pub mod error;
pub mod feed;
pub mod game;
pub mod http;
pub mod limits;
pub mod revocation;
pub mod serve;
pub mod services;
pub mod sessions;
pub mod store;
pub mod telemetry;
pub mod ws;

pub use app::{App, AppState};
pub use config::Config;
