//! The one API error type. Every non-2xx answer is `{"error": code, "message"}`
//! with a stable code per variant, so that clients match on codes, never on text.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tether_shared::api::{BanTerms, ErrorBody};
use time::OffsetDateTime;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400, 413, 415 or 422: the request cannot be used as sent.
    #[error("{message}")]
    InvalidRequest { status: StatusCode, message: String },
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("missing, malformed or expired access token")]
    InvalidToken,
    #[error("this session was revoked")]
    SessionRevoked,
    #[error("this session has ended; log in again")]
    SessionExpired,
    #[error("unknown or already used refresh token")]
    InvalidRefreshToken,
    /// A service credential (HTTP Basic) was missing or wrong.
    #[error("missing or wrong service credentials")]
    InvalidClient,
    #[error("this account is banned")]
    Banned { reason: Option<String>, until: Option<OffsetDateTime> },
    #[error("not allowed")]
    Forbidden,
    /// 403 `forbidden` with the rule that refused it.
    #[error("{0}")]
    Refused(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("that username is taken")]
    UsernameTaken,
    #[error("too many requests; retry later")]
    RateLimited { retry_after_secs: u64 },
    #[error("not ready")]
    NotReady,
    /// 503: the server is shedding load (its password hash queue is full).
    #[error("busy; retry later")]
    Busy { retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid_request(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest { status, message: message.into() }
    }

    /// A body that parsed but breaks a rule (422, as axum answers a missing field).
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::invalid_request(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { status, .. } => *status,
            ApiError::InvalidCredentials
            | ApiError::InvalidToken
            | ApiError::SessionRevoked
            | ApiError::SessionExpired
            | ApiError::InvalidRefreshToken
            | ApiError::InvalidClient => StatusCode::UNAUTHORIZED,
            ApiError::Banned { .. } | ApiError::Forbidden | ApiError::Refused(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UsernameTaken => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::InvalidToken => "invalid_token",
            ApiError::SessionRevoked => "session_revoked",
            ApiError::SessionExpired => "session_expired",
            ApiError::InvalidRefreshToken => "invalid_refresh_token",
            ApiError::InvalidClient => "invalid_client",
            ApiError::Banned { .. } => "banned",
            ApiError::Forbidden | ApiError::Refused(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UsernameTaken => "username_taken",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotReady => "not_ready",
            ApiError::Busy { .. } => "busy",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The error a framework-made answer of this status stands for.
    pub fn for_status(status: StatusCode) -> ApiError {
        match status.as_u16() {
            401 => ApiError::InvalidToken,
            403 => ApiError::Forbidden,
            404 => ApiError::NotFound,
            405 => ApiError::MethodNotAllowed,
            429 => ApiError::RateLimited { retry_after_secs: 1 },
            503 => ApiError::NotReady,
            400..=499 => ApiError::invalid_request(
                status,
                status.canonical_reason().unwrap_or("invalid request").to_lowercase(),
            ),
            _ => ApiError::Internal(anyhow::anyhow!("framework answered {status}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(status.as_u16(), 401 | 403 | 429) {
            crate::telemetry::metrics::auth_failure(self.code());
        }
        let message = match &self {
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let ban = match &self {
            ApiError::Banned { reason, until } => Some(BanTerms { reason: reason.clone(), until: *until }),
            _ => None,
        };
        let body = ErrorBody { error: self.code().to_owned(), message, ban };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            // RFC 6750 §3: tell a Bearer client that its token is what failed.
            ApiError::InvalidToken | ApiError::SessionRevoked | ApiError::SessionExpired => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            ApiError::InvalidClient => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="tether""#));
            }
            ApiError::RateLimited { retry_after_secs } | ApiError::Busy { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}
