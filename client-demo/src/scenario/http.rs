//! `http`: authenticated requests at a fixed concurrency for `--duration`: `GET /api/me`
//! with a bot's Bearer token, or (`--endpoint introspect`) `POST /api/auth/introspect` of
//! a bot's token with a service credential, which is what another service pays to check
//! a token. With `--compare-healthz` the same against `GET /healthz` (no auth, no
//! registry lookup), so that the cost of authentication shows as a ratio.

use super::{Ctx, join_all, settings};
use crate::api::{describe_reqwest, describe_status};
use crate::cli::{CREDENTIAL_HOW, Endpoint, HttpArgs};
use crate::report::Report;
use crate::stats::SharedHist;
use crate::{bots, progress};
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What one phase measured.
struct Phase {
    ok: u64,
    failed: u64,
    seconds: f64,
    latency: Histogram<u64>,
}

impl Phase {
    fn per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.ok as f64 / self.seconds } else { 0.0 }
    }
}

/// What a phase's workers ask.
#[derive(Clone)]
enum Probe {
    /// `GET /api/me` with a bot's Bearer token.
    Me,
    /// `POST /api/auth/introspect` of a bot's token, with a service credential.
    Introspect { client_id: Arc<str>, client_secret: Arc<str> },
    /// `GET /healthz`, without any credential.
    Healthz,
}

impl Probe {
    /// The request, as the report and the failure kinds name it.
    fn label(&self) -> &'static str {
        match self {
            Probe::Me => "GET /api/me",
            Probe::Introspect { .. } => "POST /api/auth/introspect",
            Probe::Healthz => "GET /healthz",
        }
    }

    fn path(&self) -> &'static str {
        match self {
            Probe::Me => "/api/me",
            Probe::Introspect { .. } => "/api/auth/introspect",
            Probe::Healthz => "/healthz",
        }
    }

    /// Its name in the ratios against healthz.
    fn short(&self) -> &'static str {
        match self {
            Probe::Me => "me",
            Probe::Introspect { .. } => "introspect",
            Probe::Healthz => "healthz",
        }
    }

    /// What a success is called: introspection answers 200 to a dead token too.
    fn success(&self) -> &'static str {
        match self {
            Probe::Introspect { .. } => "answered active",
            _ => "answered 200",
        }
    }

    /// Why a 200 is not a success, if it is not: only an introspection says so in its body.
    fn refusal(&self, body: &[u8]) -> Option<String> {
        let Probe::Introspect { .. } = self else { return None };
        match serde_json::from_slice::<Introspection>(body) {
            Ok(Introspection { active: true }) => None,
            Ok(Introspection { active: false }) => Some(format!("{}: 200 active false", self.label())),
            Err(_) => Some(format!("{}: 200 with an unexpected body", self.label())),
        }
    }
}

/// The one field of an introspection answer that decides.
#[derive(serde::Deserialize)]
struct Introspection {
    active: bool,
}

pub async fn run(ctx: &Ctx<'_>, args: &HttpArgs) -> anyhow::Result<Report> {
    // Before the logins, which may take long, so that a missing credential fails at once.
    let probe = match args.endpoint {
        Endpoint::Me => Probe::Me,
        Endpoint::Introspect => {
            let (client_id, client_secret) = args.service.require("--endpoint introspect")?;
            Probe::Introspect { client_id: client_id.into(), client_secret: client_secret.into() }
        }
    };
    let sessions = bots::log_in(ctx, args.sessions).await?;
    let tokens: Arc<Vec<Arc<str>>> = Arc::new(sessions.iter().map(|session| session.token.clone()).collect());
    let measured = phase(ctx, &probe, tokens.clone(), args).await;
    let healthz =
        if args.compare_healthz { Some(phase(ctx, &Probe::Healthz, tokens, args).await) } else { None };

    let label = probe.label();
    let mut report = Report::new("http", settings(args));
    report.figure("concurrency", args.concurrency, "");
    report.figure("sessions logged in", sessions.len() as u32, "");
    report.figure(format!("{label} {}", probe.success()), measured.ok as f64, "");
    report.figure(format!("{label} failed"), measured.failed as f64, "");
    report.figure(format!("{label} phase"), measured.seconds, "s");
    report.figure(format!("{label} per second"), measured.per_second(), "/s");
    if let Some(healthz) = &healthz {
        report.figure("GET /healthz answered 200", healthz.ok as f64, "");
        report.figure("GET /healthz failed", healthz.failed as f64, "");
        report.figure("GET /healthz phase", healthz.seconds, "s");
        report.figure("GET /healthz per second", healthz.per_second(), "/s");
        let ratio = format!("ratio {}/healthz", probe.short());
        if healthz.per_second() > 0.0 {
            report.figure(
                format!("{ratio}, requests per second"),
                measured.per_second() / healthz.per_second(),
                "",
            );
        }
        let p50 = |latency: &Histogram<u64>| latency.value_at_quantile(0.5) as f64;
        if !healthz.latency.is_empty() && !measured.latency.is_empty() {
            let p50_ratio = p50(&measured.latency) / p50(&healthz.latency);
            report.figure(format!("{ratio}, p50 latency"), p50_ratio, "");
        }
    }
    report.latency(label, measured.latency);
    if let Some(healthz) = healthz {
        report.latency(Probe::Healthz.label(), healthz.latency);
    }
    if ctx.failures.snapshot().keys().any(|kind| kind.ends_with("invalid_client")) {
        report.hints.push(format!(
            "the server refused the service credential (401 invalid_client): check --client-id and \
             --client-secret; {CREDENTIAL_HOW}"
        ));
    }
    Ok(report)
}

/// `--concurrency` workers, each sending one request after another until the phase ends;
/// worker w uses the token of session `w mod sessions` (when the probe takes one).
async fn phase(ctx: &Ctx<'_>, probe: &Probe, tokens: Arc<Vec<Arc<str>>>, args: &HttpArgs) -> Phase {
    let duration = args.common.duration;
    let url = ctx.api.url(probe.path());
    let latency = SharedHist::default();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let bar = progress::timer(duration, probe.path());
    let started = Instant::now();
    let ticker = progress::live(&bar, true, {
        let (ok, failed) = (ok.clone(), failed.clone());
        move || {
            let done = ok.load(Ordering::Relaxed);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            format!("{done} ok ({rate:.0}/s), {} failed", failed.load(Ordering::Relaxed))
        }
    });
    let deadline = started + duration;
    let stage = probe.label();
    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency as usize {
        let client = ctx.api.client_for(worker).clone();
        // `bots::log_in` returns at least one session.
        let token = tokens[worker % tokens.len()].clone();
        // A JWT is base64url and dots: nothing in it needs percent-encoding.
        let form = format!("token={token}");
        let (url, probe, failures) = (url.clone(), probe.clone(), ctx.failures.clone());
        let (mut recorder, ok, failed) = (latency.recorder(), ok.clone(), failed.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let request = match &probe {
                    Probe::Me => client.get(url.clone()).bearer_auth(&token),
                    Probe::Introspect { client_id, client_secret } => client
                        .post(url.clone())
                        .basic_auth(client_id, Some(client_secret))
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(form.clone()),
                    Probe::Healthz => client.get(url.clone()),
                };
                let sent = Instant::now();
                let answer = match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.map(|body| (status, body))
                    }
                    Err(error) => Err(error),
                };
                match answer {
                    Ok((StatusCode::OK, body)) => match probe.refusal(&body) {
                        None => {
                            recorder.record(sent.elapsed());
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(kind) => {
                            failures.add(kind);
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Ok((status, body)) => {
                        failures.add(describe_status(stage, status, &body));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failures.add(describe_reqwest(stage, &error));
                        failed.fetch_add(1, Ordering::Relaxed);
                        // A refused connection fails at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    join_all(workers).await;
    let seconds = started.elapsed().as_secs_f64();
    drop(ticker);
    bar.finish_and_clear();
    Phase {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds,
        latency: latency.snapshot(),
    }
}
