//! The browser pages, embedded in the binary so that one file is the whole server.

use crate::app::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Same-origin everything; no framing (the admin console must not be clickjacked).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../../../client-demo/web/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/game.js", "game.js", "text/javascript; charset=utf-8"),
    asset!("/game.css", "game.css", "text/css; charset=utf-8"),
    asset!("/tether-client.js", "tether-client.js", "text/javascript; charset=utf-8"),
    asset!("/admin", "admin.html", "text/html; charset=utf-8"),
    asset!("/admin.js", "admin.js", "text/javascript; charset=utf-8"),
    asset!("/admin.css", "admin.css", "text/css; charset=utf-8"),
];

pub fn router() -> Router<AppState> {
    ASSETS.iter().fold(Router::new(), |router, asset| router.route(asset.path, get(move || serve(asset))))
}

async fn serve(asset: &'static Asset) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        // The pages change with the binary; never let a browser mix versions.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    (headers, asset.body).into_response()
}
