//! HTTP request and response bodies of the contract.

use crate::{SessionId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Player,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Player => "player",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "player" => Some(Role::Player),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Every non-2xx answer. `reason` and `until` are present only on `banned`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialsRequest {
    pub username: String,
    pub password: String,
}

pub type RegisterRequest = CredentialsRequest;
pub type LoginRequest = CredentialsRequest;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    pub role: Role,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub user: UserView,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenPairResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub session_id: SessionId,
    pub user: UserView,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: SessionId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeResponse {
    pub user: UserView,
    pub session: SessionSummary,
}

/// One of the caller's own sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnSessionView {
    pub id: SessionId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// Open sockets of this session on the node that answered.
    pub sockets: u32,
    /// Whether this is the session of the token that asked.
    pub current: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnSessionsResponse {
    pub sessions: Vec<OwnSessionView>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RevokeRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub sessions_revoked: u64,
    pub sockets_closed: u64,
}
