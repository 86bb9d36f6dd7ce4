//! The browser pages, embedded in the binary so that one file is the whole server.

use crate::app::AppState;
use axum::Router;
use axum::response::Html;
use axum::routing::get;

const GAME_PAGE: &str = include_str!("../../../client-demo/web/index.html");

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(|| async { Html(GAME_PAGE) }))
}
