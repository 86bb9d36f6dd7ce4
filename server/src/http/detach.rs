//! Requests that may change state run to the end even if their client hangs up.
//!
//! hyper drops a request's future the moment it sees its connection reset, and it may
//! see the reset before it first polls the future: a logout sent and then cut off
//! would never run at all, or stop between its commit and its answer. So every
//! request but `GET`, `HEAD` and `OPTIONS` is spawned as its own task the moment hyper
//! hands it over; hyper only waits on the task's answer, and dropping that wait
//! leaves the task running. Reads stay inline: there is nothing to finish, and the
//! hot path (`GET /api/me`, the upgrade) pays no spawn.

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse as _, Response};
use futures_util::future::BoxFuture;
use std::convert::Infallible;
use tower_service::Service as _;

/// Starts answering `request`: a read inline, on the caller's poll; anything else as a
/// task of its own, started now (in hyper's `call`, not on a poll that may never come).
pub fn answer(mut router: Router, request: Request) -> BoxFuture<'static, Result<Response, Infallible>> {
    let reads_only = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // A Router is always ready: `call` needs no `poll_ready` first.
    let answer = router.call(request);
    if reads_only {
        return Box::pin(answer);
    }
    let task = tokio::spawn(answer);
    Box::pin(async move {
        match task.await {
            Ok(answered) => answered,
            Err(panicked) => {
                tracing::error!(error = %panicked, "a request's task failed");
                Ok(crate::error::ApiError::Internal(anyhow::anyhow!("request task failed")).into_response())
            }
        }
    })
}
