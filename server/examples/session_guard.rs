//! Another service of the game (a shop, a chat) trusting Tether's sessions without
//! calling Tether per request: it verifies EdDSA access tokens offline with the keys
//! of `/.well-known/jwks.json`, follows the revocation feed (snapshot, then the
//! stream, resumed with `Last-Event-ID` after any break), and refuses the token of a
//! revoked session from the moment its event arrives.
//!
//! ```text
//! tether service create --name shop            # prints client_id and client_secret
//! SERVICE_CLIENT_ID=... SERVICE_CLIENT_SECRET=... \
//!   cargo run -p tether --example session_guard -- --tether http://127.0.0.1:8080 --bind 127.0.0.1:9090
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:9090/whoami
//! ```

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Between a broken stream and the next attempt.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

struct Guard {
    tether: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    /// `kid` to key, refetched when a token names a `kid` not in it.
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// Sessions revoked. A longer-lived service would forget each at its
    /// `session_expires_at`, when its tokens fail their `exp` check anyway.
    revoked: RwLock<HashSet<String>>,
    /// False until the first snapshot is in: until then nothing is vouched for.
    synced: std::sync::atomic::AtomicBool,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    name: String,
}

#[derive(Deserialize)]
struct Revoked {
    sid: String,
}

#[derive(Deserialize)]
struct Snapshot {
    cursor: String,
    revoked: Vec<Revoked>,
}

fn argument(args: &[String], flag: &str, default: &str) -> String {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let guard = Arc::new(Guard {
        tether: argument(&args, "--tether", "http://127.0.0.1:8080"),
        client_id: std::env::var("SERVICE_CLIENT_ID")?,
        client_secret: std::env::var("SERVICE_CLIENT_SECRET")?,
        http: reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?,
        keys: RwLock::default(),
        revoked: RwLock::default(),
        synced: std::sync::atomic::AtomicBool::new(false),
    });
    guard.fetch_keys().await?;
    tokio::spawn(follow_feed(guard.clone()));
    let listener = tokio::net::TcpListener::bind(argument(&args, "--bind", "127.0.0.1:9090")).await?;
    // The one line a supervisor (or a test) waits for.
    println!("session_guard listening on {}", listener.local_addr()?);
    let app = axum::Router::new().route("/whoami", get(whoami)).with_state(guard);
    axum::serve(listener, app).await?;
    Ok(())
}

impl Guard {
    async fn fetch_keys(&self) -> anyhow::Result<()> {
        let set: JwkSet = self
            .http
            .get(format!("{}/.well-known/jwks.json", self.tether))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let Some(kid) = &jwk.common.key_id {
                keys.insert(kid.clone(), DecodingKey::from_jwk(jwk)?);
            }
        }
        *self.keys.write().unwrap() = keys;
        Ok(())
    }

    /// Offline: the signature with the published key (EdDSA only, whatever the header
    /// says), the claims, and the revoked set.
    async fn check(&self, token: &str) -> Result<Claims, &'static str> {
        if !self.synced.load(std::sync::atomic::Ordering::Acquire) {
            return Err("not yet following the revocation feed");
        }
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|header| header.kid).ok_or("no kid")?;
        if !self.keys.read().unwrap().contains_key(&kid) {
            // A key rotated in since the last fetch; an unknown kid after that is forged.
            self.fetch_keys().await.map_err(|_| "cannot fetch the keys")?;
        }
        let key = self.keys.read().unwrap().get(&kid).cloned().ok_or("unknown kid")?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["tether"]);
        validation.set_audience(&["tether"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|_| "invalid token")?.claims;
        if self.revoked.read().unwrap().contains(&claims.sid) {
            return Err("session revoked");
        }
        Ok(claims)
    }

    async fn snapshot(&self) -> anyhow::Result<String> {
        let snapshot: Snapshot = self
            .http
            .get(format!("{}/api/auth/revocations/snapshot", self.tether))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        *self.revoked.write().unwrap() = snapshot.revoked.into_iter().map(|revoked| revoked.sid).collect();
        self.synced.store(true, std::sync::atomic::Ordering::Release);
        Ok(snapshot.cursor)
    }

    /// Reads the stream from `cursor` until it breaks, moving `cursor` to each event
    /// as it is taken in; false when the server said `reset`.
    async fn stream(&self, cursor: &mut String) -> anyhow::Result<bool> {
        let mut response = self
            .http
            .get(format!("{}/api/auth/revocations", self.tether))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header("last-event-id", cursor.as_str())
            .send()
            .await?
            .error_for_status()?;
        let mut pending = String::new();
        let (mut id, mut event) = (None::<String>, None::<String>);
        while let Some(chunk) = response.chunk().await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line = pending[..end].trim_end_matches('\r').to_owned();
                pending.drain(..=end);
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    match event.as_deref() {
                        Some("reset") => return Ok(false),
                        Some("revoked") => {
                            if let Ok(revoked) = serde_json::from_str::<Revoked>(value.trim()) {
                                self.revoked.write().unwrap().insert(revoked.sid);
                            }
                        }
                        _ => {}
                    }
                } else if line.is_empty() {
                    if let Some(id) = id.take() {
                        *cursor = id;
                    }
                    event = None;
                }
            }
        }
        Ok(true)
    }
}

/// Snapshot, then the stream, for ever: resume after a break, start over after `reset`.
async fn follow_feed(guard: Arc<Guard>) {
    let mut cursor = None;
    loop {
        let mut from = match cursor.take() {
            Some(cursor) => cursor,
            None => match guard.snapshot().await {
                Ok(cursor) => cursor,
                Err(error) => {
                    eprintln!("session_guard: snapshot failed: {error:#}");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            },
        };
        match guard.stream(&mut from).await {
            Ok(true) => cursor = Some(from),
            Ok(false) => eprintln!("session_guard: the feed said reset; reading the snapshot again"),
            Err(error) => {
                eprintln!("session_guard: stream broke: {error:#}");
                cursor = Some(from);
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn whoami(
    State(guard): State<Arc<Guard>>,
    headers: HeaderMap,
) -> (StatusCode, Json<serde_json::Value>) {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = token else {
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "no bearer token"})));
    };
    match guard.check(token).await {
        Ok(claims) => (
            StatusCode::OK,
            Json(serde_json::json!({"sub": claims.sub, "sid": claims.sid, "name": claims.name})),
        ),
        Err(why) => (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": why}))),
    }
}
