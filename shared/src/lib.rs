//! Wire types of the Tether contract (`API.md`), shared by the server, the load
//! generator and any Rust client: ids, HTTP request and response bodies, the error
//! body, WebSocket messages and close codes. Serde only: no runtime, no framework.

pub mod api;
pub mod close;
pub mod game;
pub mod ids;
pub mod snapshot;
pub mod ws;

pub use ids::{SessionId, UserId};
