//! `http`: authenticated `GET /api/me` at a fixed concurrency for `--duration`, and
//! with `--compare-healthz` the same against `GET /healthz` (no auth, no registry
//! lookup), so that the cost of authentication shows as a ratio.

use super::{Ctx, join_all, settings};
use crate::api::{describe_reqwest, describe_status};
use crate::cli::HttpArgs;
use crate::report::Report;
use crate::stats::SharedHist;
use crate::{bots, progress};
use hdrhistogram::Histogram;
use reqwest::StatusCode;
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

pub async fn run(ctx: &Ctx<'_>, args: &HttpArgs) -> anyhow::Result<Report> {
    let sessions = bots::log_in(ctx, args.sessions).await?;
    let tokens: Arc<Vec<Arc<str>>> = Arc::new(sessions.iter().map(|session| session.token.clone()).collect());
    let me = phase(ctx, "/api/me", Some(tokens), args).await;
    let healthz = if args.compare_healthz { Some(phase(ctx, "/healthz", None, args).await) } else { None };

    let mut report = Report::new("http", settings(args));
    report.figure("concurrency", args.concurrency, "");
    report.figure("sessions logged in", sessions.len() as u32, "");
    report.figure("GET /api/me answered 200", me.ok as f64, "");
    report.figure("GET /api/me failed", me.failed as f64, "");
    report.figure("GET /api/me phase", me.seconds, "s");
    report.figure("GET /api/me per second", me.per_second(), "/s");
    if let Some(healthz) = &healthz {
        report.figure("GET /healthz answered 200", healthz.ok as f64, "");
        report.figure("GET /healthz failed", healthz.failed as f64, "");
        report.figure("GET /healthz phase", healthz.seconds, "s");
        report.figure("GET /healthz per second", healthz.per_second(), "/s");
        if healthz.per_second() > 0.0 {
            report.figure(
                "ratio me/healthz, requests per second",
                me.per_second() / healthz.per_second(),
                "",
            );
        }
        let p50 = |latency: &Histogram<u64>| latency.value_at_quantile(0.5) as f64;
        if !healthz.latency.is_empty() && !me.latency.is_empty() {
            report.figure("ratio me/healthz, p50 latency", p50(&me.latency) / p50(&healthz.latency), "");
        }
    }
    report.latency("GET /api/me", me.latency);
    if let Some(healthz) = healthz {
        report.latency("GET /healthz", healthz.latency);
    }
    Ok(report)
}

/// `--concurrency` workers, each sending one request after another until the phase ends.
async fn phase(
    ctx: &Ctx<'_>,
    path: &'static str,
    tokens: Option<Arc<Vec<Arc<str>>>>,
    args: &HttpArgs,
) -> Phase {
    let duration = args.common.duration;
    let url = ctx.api.url(path);
    let latency = SharedHist::default();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let bar = progress::timer(duration, if tokens.is_some() { "/api/me" } else { "/healthz" });
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
    let stage = format!("GET {path}");
    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency as usize {
        let client = ctx.api.client_for(worker).clone();
        let token = tokens.as_ref().map(|tokens| tokens[worker % tokens.len()].clone());
        let (url, stage, failures) = (url.clone(), stage.clone(), ctx.failures.clone());
        let (mut recorder, ok, failed) = (latency.recorder(), ok.clone(), failed.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let mut request = client.get(url.clone());
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let sent = Instant::now();
                let answer = match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.map(|body| (status, body))
                    }
                    Err(error) => Err(error),
                };
                match answer {
                    Ok((StatusCode::OK, _)) => {
                        recorder.record(sent.elapsed());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) => {
                        failures.add(describe_status(&stage, status, &body));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failures.add(describe_reqwest(&stage, &error));
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
