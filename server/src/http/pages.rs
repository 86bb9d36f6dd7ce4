//! The browser pages, embedded in the binary so that one file is the whole server.

use crate::app::AppState;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::Path;
use std::sync::Arc;

/// Same-origin everything; no framing (the admin console must not be clickjacked).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

struct Asset {
    path: &'static str,
    file: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:expr, $file:literal, $content_type:literal) => {
        Asset {
            path: $path,
            file: $file,
            content_type: $content_type,
            body: include_str!(concat!("../../../client-demo/web/", $file)),
        }
    };
}

macro_rules! script {
    ($file:literal) => {
        asset!(concat!("/", $file), $file, "text/javascript; charset=utf-8")
    };
}

const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    script!("game.js"),
    script!("game-net.js"),
    script!("game-snapshots.js"),
    script!("game-prediction.js"),
    script!("game-render.js"),
    script!("game-panels.js"),
    asset!("/game.css", "game.css", "text/css; charset=utf-8"),
    script!("tether-client.js"),
    asset!("/admin", "admin.html", "text/html; charset=utf-8"),
    asset!("/admin.js", "admin.js", "text/javascript; charset=utf-8"),
    asset!("/admin.css", "admin.css", "text/css; charset=utf-8"),
];

pub fn router(web_dir: Option<&Path>) -> Router<AppState> {
    let web_dir: Option<Arc<Path>> = web_dir.map(Into::into);
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let web_dir = web_dir.clone();
        router.route(asset.path, get(move || serve(asset, web_dir)))
    })
}

async fn serve(asset: &'static Asset, web_dir: Option<Arc<Path>>) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        // The pages change with the binary; never let a browser mix versions.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    let Some(web_dir) = web_dir else { return (headers, asset.body).into_response() };
    match tokio::fs::read(web_dir.join(asset.file)).await {
        Ok(body) => (headers, body).into_response(),
        Err(error) => {
            tracing::warn!(file = asset.file, %error, "cannot read the page from --web-dir");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}
