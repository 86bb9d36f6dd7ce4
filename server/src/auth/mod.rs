//! Who is calling: access tokens (JWT), refresh tokens, password hashing, and the
//! extractor that turns a request into an authenticated session.

pub mod extract;
pub mod jwt;
pub mod key_file;
pub mod keyset;
pub mod passwords;
pub mod refresh;

pub use extract::{
    AdminSession, AuthFailure, AuthSession, BearerHeader, BearerToRevoke, ServiceAuth, UpgradeToken,
};
