//! What the game's other services do, as a test drives it: service credentials, key
//! files, introspection calls and a reader of the revocation stream.

use crate::{TestApp, WAIT};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// A service credential as `tether service create` prints it.
#[derive(Clone, Debug)]
pub struct Credential {
    pub client_id: String,
    pub client_secret: String,
}

impl Credential {
    pub fn from_printed(line: &str) -> Credential {
        let printed: Value = serde_json::from_str(line.trim()).expect("one line of JSON");
        Credential {
            client_id: printed["client_id"].as_str().unwrap().to_owned(),
            client_secret: printed["client_secret"].as_str().unwrap().to_owned(),
        }
    }
}

/// A credential created in the app's store and loaded at once (a node rereads the
/// table every 2 s; an in-process test need not wait for it).
pub async fn service_credential(app: &TestApp, name: &str) -> Credential {
    let (record, client_secret) = tether::services::new_credential(name).unwrap();
    assert!(app.state.store.create_service(&record).await.unwrap(), "the name {name} is free");
    tether::services::load(&app.state).await.unwrap();
    Credential { client_id: record.client_id, client_secret }
}

/// `POST /api/auth/introspect` with a form body.
pub async fn introspect(
    http: &reqwest::Client,
    base: &str,
    credential: &Credential,
    token: &str,
) -> reqwest::Response {
    http.post(format!("{base}/api/auth/introspect"))
        .basic_auth(&credential.client_id, Some(&credential.client_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&token_type_hint=access_token"))
        .send()
        .await
        .unwrap()
}

/// `active` of an introspection that must answer 200.
pub async fn is_active(http: &reqwest::Client, base: &str, credential: &Credential, token: &str) -> bool {
    let response = introspect(http, base, credential, token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["active"].as_bool().expect("active is a boolean")
}

/// Writes a key file `{"active": active, "keys": keys}` atomically (write, rename), as
/// an operator's deploy tool would.
pub fn write_key_file(path: &Path, active: &str, keys: &[Value]) {
    let text = json!({"active": active, "keys": keys}).to_string();
    let staging = path.with_extension("staging");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// A private JWK from `tether keys generate` logic (same code, no process).
pub fn new_key(alg: &str, kid: &str) -> Value {
    let algorithm = match alg {
        "HS256" => tether::auth::keyset::KeyAlgorithm::Hs256,
        _ => tether::auth::keyset::KeyAlgorithm::EdDsa,
    };
    serde_json::to_value(tether::auth::keyset::generate(algorithm, Some(kid.to_owned())).to_private_jwk())
        .unwrap()
}

/// The `kid` in a token's header.
pub fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A revocation stream as a consumer reads it.
pub struct Stream {
    response: reqwest::Response,
    pending: String,
    pub comments: usize,
    ended: bool,
}

impl Stream {
    /// Opens the stream; `after` goes in `Last-Event-ID` when `as_header`, else in the query.
    pub async fn open(base: &str, credential: &Credential, after: Option<&str>, as_header: bool) -> Stream {
        let response = Stream::request(base, credential, after, as_header).await;
        assert_eq!(response.status(), 200, "the stream opens");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream { response, pending: String::new(), comments: 0, ended: false }
    }

    pub async fn request(
        base: &str,
        credential: &Credential,
        after: Option<&str>,
        as_header: bool,
    ) -> reqwest::Response {
        // No overall timeout: the stream never ends by itself. Each read below is bounded.
        let http = reqwest::Client::builder().connect_timeout(WAIT).build().unwrap();
        let mut request = http
            .get(format!("{base}/api/auth/revocations"))
            .basic_auth(&credential.client_id, Some(&credential.client_secret));
        match (after, as_header) {
            (Some(after), true) => request = request.header("last-event-id", after),
            (Some(after), false) => request = request.query(&[("after", after)]),
            (None, _) => {}
        }
        request.send().await.unwrap()
    }

    /// The next event within `bound`; None if the stream ended first. Panics when the
    /// bound passes.
    pub async fn next_within(&mut self, bound: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {bound:?}"));
            match chunk {
                Ok(Some(bytes)) => self.pending.push_str(std::str::from_utf8(&bytes).expect("UTF-8 events")),
                Ok(None) | Err(_) => self.ended = true,
            }
        }
    }

    pub async fn next(&mut self) -> SseEvent {
        self.next_within(WAIT).await.expect("the stream goes on")
    }

    /// `n` revoked events, each within [`WAIT`] of the one before.
    pub async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let event = self.next().await;
            assert_eq!(event.event, "revoked", "only revocations here: {event:?}");
            events.push(event);
        }
        events
    }

    /// True if the stream ends within `bound` (events before the end are drained).
    pub async fn ends_within(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.next_within(left + Duration::from_secs(1))).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// One whole event from what was read, if there is one; comments are counted.
    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.pending.find("\n\n")?;
            let block: String = self.pending.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                } else if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(value.trim()).expect("data is one line of JSON"));
                }
            }
            if let Some(event) = event {
                return Some(SseEvent { id, event, data: data.unwrap_or(Value::Null) });
            }
        }
    }
}

/// The `sid`s of revoked events, in order.
pub fn sids(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|event| event.data["sid"].as_str().unwrap().to_owned()).collect()
}
