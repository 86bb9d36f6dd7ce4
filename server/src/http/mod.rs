//! The HTTP API: one file per route group, the request extractors that answer in
//! the contract's error format, and the layers every request passes through.

mod account;
mod admin;
mod auth;
pub mod detach;
mod health;
mod metrics;
pub mod openapi;
mod pages;
mod services;

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `web_dir`: serve the pages from there instead of the built-in copies (`--web-dir`).
pub fn router(web_dir: Option<&std::path::Path>) -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(account::router())
        .merge(admin::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .merge(services::router())
        .merge(pages::router(web_dir))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// The layers around every route, outermost last.
pub fn with_layers(router: Router) -> Router {
    router
        .layer(middleware::map_response(errors_in_contract_format))
        .layer(middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // The span is built from the path alone: a query may hold `access_token`,
        // which must never reach a log line.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id =
                request.headers().get("x-request-id").and_then(|id| id.to_str().ok()).unwrap_or_default();
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
                request_id = %request_id,
                sid = tracing::field::Empty,
            )
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Answers made by the framework or a layer (an unknown upgrade, a timeout...) get
/// the contract's JSON body too.
async fn errors_in_contract_format(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut rewritten = ApiError::for_status(status).into_response();
    if let Some(allow) = allow {
        rewritten.headers_mut().insert(header::ALLOW, allow);
    }
    rewritten
}

/// `axum::Json` whose rejections are the contract's 400/413/415/422 bodies.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` whose rejection is 404: a malformed id names nothing.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejection is the contract's 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::invalid_request(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::invalid_request(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> ApiError {
        ApiError::NotFound
    }
}

/// `204 No Content` with extra headers.
fn no_content_with(headers: impl IntoIterator<Item = (header::HeaderName, HeaderValue)>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().extend(headers);
    response
}
