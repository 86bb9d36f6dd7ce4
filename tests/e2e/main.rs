//! End-to-end tests: each starts real servers on port 0 with a fresh database and
//! talks to them over real HTTP and WebSocket connections.

mod account;
mod admin;
mod auth;
mod persistence;
mod refresh;
mod sockets;
mod tokens;
