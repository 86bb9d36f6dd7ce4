//! `GET /api/openapi.json`: the OpenAPI 3 document of every HTTP route, generated
//! from the handlers' annotations and the shared crate's types.

use super::{account, admin, auth, health, services};
use crate::app::AppState;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::OnceLock;
use tether_shared::api::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(|| async { Json(document()) }))
}

/// Built once: the document does not change while the process runs.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tether", description = "One login for the web API and the game socket, revocable at once. \
        The WebSocket protocol (GET /ws) is described in API.md and the README."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::logout_all,
        account::me, account::list_sessions, account::delete_session,
        admin::list_sessions, admin::revoke_session, admin::kick_user, admin::ban_user, admin::unban_user,
        admin::revoke_all, admin::audit_trail,
        health::healthz, health::readyz,
        services::jwks, services::introspect, services::snapshot, services::stream,
        websocket, metrics_text, openapi_json, game_page, game_asset, admin_page, admin_asset,
    ),
    components(schemas(ErrorBody, BanTerms, Role, UserView, RevokedSession)),
    modifiers(&BearerScheme),
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        // The game's other services: `tether service create` makes the credential.
        let basic = HttpBuilder::new().scheme(HttpAuthScheme::Basic).build();
        components.add_security_scheme("service", SecurityScheme::Http(basic));
    }
}

// The routes below are served by closures or other modules; these empty functions
// carry only their documentation.

#[utoipa::path(
    get,
    path = "/ws",
    tag = "game",
    description = "The game socket. The token comes from `Authorization: Bearer`, the \
        `tether.bearer.<jwt>` subprotocol next to `tether.v1`, or `?access_token=`. \
        A token that fails still gets 101, then a 4xxx close.",
    responses(
        (status = 101, description = "switching protocols; `welcome` follows"),
        (status = 400, description = "not a WebSocket upgrade", body = ErrorBody),
        (status = 403, description = "refused Origin", body = ErrorBody),
        (status = 405, description = "not GET", body = ErrorBody),
        (status = 426, description = "upgrade required", body = ErrorBody),
        (status = 429, description = "too many upgrades from this address", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn websocket() {}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn metrics_text() {}

#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "this document", content_type = "application/json", body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 200, description = "the browser game", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn game_page() {}

#[utoipa::path(get, path = "/{asset}", tag = "pages",
    params(("asset" = String, Path, description = "game.js and its modules (game-net.js, game-snapshots.js, game-prediction.js, game-render.js, game-panels.js), game.css or tether-client.js")),
    responses(
        (status = 200, description = "a script or stylesheet of the game", body = String),
        (status = 404, description = "no such asset", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn game_asset() {}

#[utoipa::path(get, path = "/admin", tag = "pages",
    responses((status = 200, description = "the admin console", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn admin_page() {}

#[utoipa::path(get, path = "/admin.{kind}", tag = "pages",
    params(("kind" = String, Path, description = "js or css")),
    responses(
        (status = 200, description = "the admin console's script or stylesheet", body = String),
        (status = 404, description = "no such asset", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn admin_asset() {}

/// Response sets shared by many routes, so that each route lists only its own.
/// Documentation only: the handlers answer with `ApiError`, these are never built.
#[allow(dead_code)]
pub(super) mod responses {
    use tether_shared::api::ErrorBody;

    /// What any Bearer route may answer for its token.
    #[derive(utoipa::IntoResponses)]
    pub enum BearerErrors {
        /// missing, invalid or revoked token
        #[response(status = 401)]
        Unauthorized(#[to_schema] ErrorBody),
        /// `not_ready`: this node of a cluster has not read the revocation log for
        /// `--max-staleness` and cannot vouch for the session; retry with backoff
        #[response(status = 503)]
        NotReady(#[to_schema] ErrorBody),
    }

    /// What any admin route may answer for its token.
    #[derive(utoipa::IntoResponses)]
    pub enum AdminErrors {
        /// missing, invalid or revoked token
        #[response(status = 401)]
        Unauthorized(#[to_schema] ErrorBody),
        /// not an admin
        #[response(status = 403)]
        Forbidden(#[to_schema] ErrorBody),
        /// `not_ready`: this node cannot vouch for sessions right now (stale)
        #[response(status = 503)]
        NotReady(#[to_schema] ErrorBody),
    }

    /// What any route with a JSON body may answer for the body.
    #[derive(utoipa::IntoResponses)]
    pub enum BodyErrors {
        /// malformed JSON
        #[response(status = 400)]
        Malformed(#[to_schema] ErrorBody),
        /// body too large
        #[response(status = 413)]
        TooLarge(#[to_schema] ErrorBody),
        /// not JSON
        #[response(status = 415)]
        NotJson(#[to_schema] ErrorBody),
        /// invalid fields
        #[response(status = 422)]
        InvalidFields(#[to_schema] ErrorBody),
    }
}
