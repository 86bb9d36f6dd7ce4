//! Tether: one login for the web API and the game socket, revocable at once.
//!
//! - [`config`]: the `tether` command line and every `serve` setting.
//! - [`app`]: state, router, listener, background upkeep, graceful stop.
//! - [`auth`]: access tokens, refresh tokens, passwords, the session extractor.
//! - [`sessions`]: the in-memory session registry and the sockets it can close.
//! - [`revocation`]: persist, mark, close, then answer.
//! - [`limits`]: rate limits per IP, per username, per socket.
//! - [`store`]: SQLite and PostgreSQL behind one trait.
//! - [`cluster`]: several nodes on one PostgreSQL: the revocation log, followed.
//! - [`http`], [`ws`]: the routes; [`game`]: rooms and their tick loops.
//! - [`bootstrap`]: the signing secret and the first admin.
//! - [`telemetry`]: logs, as text or JSON lines.

pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod cluster;
pub mod config;
pub mod error;
pub mod game;
pub mod http;
pub mod limits;
pub mod revocation;
pub mod sessions;
pub mod store;
pub mod telemetry;
pub mod ws;

pub use app::{App, AppState};
pub use config::Config;
