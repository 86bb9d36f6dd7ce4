//! The HTTP calls of the contract that the scenarios make, each turning any failure
//! into a short failure kind (`login: http 401 invalid_credentials`).

use crate::stats::{HINTS, Hints, describe_io};
use crate::target::Target;
use reqwest::{Client, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tether_shared::SessionId;
use tether_shared::api::{
    CredentialsRequest, ErrorBody, RegisterResponse, RevokeRequest, RevokeResponse, TokenPairResponse,
};

/// Longest wait for one HTTP answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Api {
    /// One client per source address (or one, bound to none); each keeps its own pool.
    clients: Vec<Client>,
    next: AtomicUsize,
    pub target: Arc<Target>,
}

impl Api {
    pub fn new(target: Arc<Target>) -> anyhow::Result<Api> {
        let build = |source: Option<std::net::IpAddr>| {
            Client::builder()
                // Never through a proxy from the environment, never redirected elsewhere:
                // the traffic goes to the loopback target and nowhere else.
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(REQUEST_TIMEOUT)
                .tcp_nodelay(true)
                .local_address(source)
                .user_agent(concat!("tether-loadgen/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let clients = if target.source_ips.is_empty() {
            vec![build(None)?]
        } else {
            target.source_ips.iter().map(|ip| build(Some(*ip))).collect::<Result<_, _>>()?
        };
        Ok(Api { clients, next: AtomicUsize::new(0), target })
    }

    /// The next client in turn (so successive connections use successive source addresses).
    pub fn client(&self) -> &Client {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[turn % self.clients.len()]
    }

    /// A fixed client per worker, so that a worker keeps its keep-alive connection.
    pub fn client_for(&self, worker: usize) -> &Client {
        &self.clients[worker % self.clients.len()]
    }

    pub fn url(&self, path: &str) -> Url {
        self.target.url(path)
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<TokenPairResponse, String> {
        let body = CredentialsRequest { username: username.to_owned(), password: password.to_owned() };
        let answer = self.client().post(self.url("/api/auth/login")).json(&body).send().await;
        expect_json("login", answer, StatusCode::OK).await
    }

    /// True when the account was created, false when it already existed.
    pub async fn register(&self, username: &str, password: &str) -> Result<bool, String> {
        let body = CredentialsRequest { username: username.to_owned(), password: password.to_owned() };
        let answer = self.client().post(self.url("/api/auth/register")).json(&body).send().await;
        match expect_json::<RegisterResponse>("register", answer, StatusCode::CREATED).await {
            Ok(_) => Ok(true),
            Err(kind) if kind.ends_with("username_taken") => Ok(false),
            Err(kind) => Err(kind),
        }
    }

    pub async fn revoke_session(
        &self,
        admin_token: &str,
        session: SessionId,
        reason: &str,
    ) -> Result<RevokeResponse, String> {
        let url = self.url(&format!("/api/admin/sessions/{session}/revoke"));
        let body = RevokeRequest { reason: Some(reason.to_owned()) };
        let answer = self.client().post(url).bearer_auth(admin_token).json(&body).send().await;
        expect_json("revoke", answer, StatusCode::OK).await
    }

    pub async fn revoke_all(&self, admin_token: &str, reason: &str) -> Result<RevokeResponse, String> {
        let body = RevokeRequest { reason: Some(reason.to_owned()) };
        let answer = self
            .client()
            .post(self.url("/api/admin/revoke-all"))
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await;
        expect_json("revoke-all", answer, StatusCode::OK).await
    }
}

async fn expect_json<T: DeserializeOwned>(
    stage: &str,
    answer: Result<Response, reqwest::Error>,
    expected: StatusCode,
) -> Result<T, String> {
    let response = answer.map_err(|error| describe_reqwest(stage, &error))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|error| describe_reqwest(stage, &error))?;
    if status != expected {
        return Err(describe_status(stage, status, &body));
    }
    serde_json::from_slice(&body).map_err(|_| format!("{stage}: unexpected body"))
}

/// `stage: http 401 invalid_token`, from the contract's error body when there is one.
pub fn describe_status(stage: &str, status: StatusCode, body: &[u8]) -> String {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Hints::note(&HINTS.rate_limited);
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => format!("{stage}: http {} {}", status.as_u16(), error.error),
        Err(_) => format!("{stage}: http {}", status.as_u16()),
    }
}

pub fn describe_reqwest(stage: &str, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("{stage}: timed out");
    }
    // The cause that says most is an I/O error somewhere down the chain.
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return describe_io(stage, io);
        }
        source = cause.source();
    }
    if error.is_connect() {
        format!("{stage}: connect error")
    } else if error.is_body() || error.is_decode() {
        format!("{stage}: body error")
    } else {
        format!("{stage}: request error")
    }
}
