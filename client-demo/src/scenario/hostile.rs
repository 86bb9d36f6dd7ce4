//! `hostile`: how honest players fare while someone attacks the server. Honest
//! clients log in and log out (a revocation) in turn, first alone for `--duration`,
//! then for another `--duration` beside three attacks from `--hostile-source`:
//! slowloris connections (a header that never ends, one byte every 5 s, reopened when
//! the server drops them), a connection flood (silent connections, held), and a
//! refresh flood (random refresh tokens, back to back). The report compares the
//! honest latencies of the two phases and counts what the server did to the attacks.
//!
//! Everything is bounded: the attacks stop with their phase, connections are capped
//! by the flags, and the refresh flood by time and by `MAX_REFRESHES_PER_WORKER`.

use super::{Ctx, join_all, settings};
use crate::api::{describe_reqwest, describe_status};
use crate::bots;
use crate::cli::HostileArgs;
use crate::report::Report;
use crate::stats::SharedHist;
use anyhow::bail;
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SLOWLORIS_TRICKLE: Duration = Duration::from_secs(5);
const MAX_REFRESHES_PER_WORKER: u64 = 200_000;

/// What the attacks saw the server do.
#[derive(Default)]
struct Tally {
    slowloris_opened: AtomicU64,
    slowloris_dropped: AtomicU64,
    flood_held: AtomicU64,
    flood_refused: AtomicU64,
    refreshes: AtomicU64,
    refreshes_limited: AtomicU64,
}

pub async fn run(ctx: &Ctx<'_>, args: &HostileArgs) -> anyhow::Result<Report> {
    if !args.hostile_source.is_loopback() || args.hostile_source.is_ipv4() != ctx.target.addr.is_ipv4() {
        bail!("--hostile-source {} must be a loopback address of the target's family", args.hostile_source);
    }
    if ctx.target.source_ips.contains(&args.hostile_source) {
        bail!("--hostile-source must differ from --source-ips: the honest clients would share its limits");
    }
    // Registers (with --register) and checks the honest accounts.
    bots::log_in(ctx, args.honest).await?;
    let duration = ctx.common.duration;

    eprintln!("phase 1: honest clients alone for {} s", duration.as_secs_f64());
    let calm = honest_phase(ctx, args, duration).await;

    eprintln!("phase 2: honest clients beside slowloris, a connection flood and a refresh flood");
    let stop = CancellationToken::new();
    let tally = Arc::new(Tally::default());
    let source = SocketAddr::new(args.hostile_source, 0);
    let mut attacks = JoinSet::new();
    for _ in 0..args.slowloris {
        attacks.spawn(slowloris(ctx.target.addr, source, stop.clone(), tally.clone()));
    }
    attacks.spawn(flood(ctx.target.addr, source, args.flood, stop.clone(), tally.clone()));
    for _ in 0..args.refresh_flood {
        attacks.spawn(refresh_flood(
            ctx.api.url("/api/auth/refresh"),
            args.hostile_source,
            stop.clone(),
            tally.clone(),
        ));
    }
    // Let the attacks take hold before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attacked = honest_phase(ctx, args, duration).await;
    stop.cancel();
    join_all(attacks).await;

    let mut report = Report::new("hostile", settings(args));
    for (name, phase) in [("alone", &calm), ("under attack", &attacked)] {
        report.figure(format!("honest logins ({name})"), phase.logins.load(Ordering::Relaxed) as f64, "");
        report.figure(format!("honest failures ({name})"), phase.failed.load(Ordering::Relaxed) as f64, "");
    }
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    report.figure("slowloris connections opened", count(&tally.slowloris_opened), "");
    report.figure("slowloris connections dropped by the server", count(&tally.slowloris_dropped), "");
    report.figure("flood connections held open", count(&tally.flood_held), "");
    report.figure("flood connections refused at accept", count(&tally.flood_refused), "");
    report.figure("random refreshes sent", count(&tally.refreshes), "");
    report.figure("random refreshes answered 429", count(&tally.refreshes_limited), "");
    let p99 = |hist: &SharedHist| hist.snapshot().value_at_quantile(0.99) as f64 / 1000.0;
    report.figure("login p99 alone", p99(&calm.login), "ms");
    report.figure("login p99 under attack", p99(&attacked.login), "ms");
    report.figure("logout (revoke) p99 alone", p99(&calm.logout), "ms");
    report.figure("logout (revoke) p99 under attack", p99(&attacked.logout), "ms");
    report.latency("login, alone", calm.login.snapshot());
    report.latency("login, under attack", attacked.login.snapshot());
    report.latency("logout (revoke), alone", calm.logout.snapshot());
    report.latency("logout (revoke), under attack", attacked.logout.snapshot());
    Ok(report)
}

struct HonestPhase {
    login: SharedHist,
    logout: SharedHist,
    logins: AtomicU64,
    failed: AtomicU64,
}

/// `--honest` clients, each logging in, then out, then pausing, until `duration` ends.
async fn honest_phase(ctx: &Ctx<'_>, args: &HostileArgs, duration: Duration) -> Arc<HonestPhase> {
    let phase = Arc::new(HonestPhase {
        login: SharedHist::default(),
        logout: SharedHist::default(),
        logins: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let deadline = Instant::now() + duration;
    let mut workers = JoinSet::new();
    for worker in 0..args.honest as usize {
        let client = ctx.api.client_for(worker).clone();
        let (login_url, logout_url) = (ctx.api.url("/api/auth/login"), ctx.api.url("/api/auth/logout"));
        let username = format!("{}{}", ctx.common.users_prefix, worker + 1);
        let body = serde_json::json!({"username": username, "password": ctx.common.bot_password});
        let (phase, failures, pause) = (phase.clone(), ctx.failures.clone(), args.honest_pause);
        workers.spawn(async move {
            let (mut logins, mut logouts) = (phase.login.recorder(), phase.logout.recorder());
            while Instant::now() < deadline {
                let sent = Instant::now();
                let token = match client.post(login_url.clone()).json(&body).send().await {
                    Ok(response) if response.status() == StatusCode::OK => {
                        logins.record(sent.elapsed());
                        phase.logins.fetch_add(1, Ordering::Relaxed);
                        let pair: serde_json::Value = response.json().await.unwrap_or_default();
                        pair["access_token"].as_str().map(str::to_owned)
                    }
                    Ok(response) => {
                        let status = response.status();
                        let body = response.bytes().await.unwrap_or_default();
                        failures.add(describe_status("honest login", status, &body));
                        None
                    }
                    Err(error) => {
                        failures.add(describe_reqwest("honest login", &error));
                        None
                    }
                };
                let Some(token) = token else {
                    phase.failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause.max(Duration::from_millis(50))).await;
                    continue;
                };
                let sent = Instant::now();
                match client.post(logout_url.clone()).bearer_auth(&token).send().await {
                    Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                        logouts.record(sent.elapsed())
                    }
                    Ok(response) => {
                        failures.add(describe_status("honest logout", response.status(), b""));
                        phase.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failures.add(describe_reqwest("honest logout", &error));
                        phase.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(pause).await;
            }
        });
    }
    join_all(workers).await;
    phase
}

async fn connect_from(target: SocketAddr, source: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(source)?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// One slowloris connection, reopened each time the server drops it, until `stop`.
async fn slowloris(target: SocketAddr, source: SocketAddr, stop: CancellationToken, tally: Arc<Tally>) {
    while !stop.is_cancelled() {
        let Ok(mut tcp) = connect_from(target, source).await else {
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
        };
        tally.slowloris_opened.fetch_add(1, Ordering::Relaxed);
        if tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.is_err() {
            tally.slowloris_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                read = tcp.read(&mut buf) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        tally.slowloris_dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                _ = tokio::time::sleep(SLOWLORIS_TRICKLE) => {
                    if tcp.write_all(b"X").await.is_err() {
                        tally.slowloris_dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

/// `count` silent connections, held until `stop`; those the server resets are counted.
async fn flood(
    target: SocketAddr,
    source: SocketAddr,
    count: u32,
    stop: CancellationToken,
    tally: Arc<Tally>,
) {
    let mut held = Vec::new();
    for _ in 0..count {
        if stop.is_cancelled() {
            break;
        }
        match connect_from(target, source).await {
            Ok(tcp) => held.push(tcp),
            Err(_) => {
                tally.flood_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Give the server a moment to refuse, then see which are still open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut open = Vec::new();
    for mut tcp in held {
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await {
            Ok(Ok(0) | Err(_)) => {
                tally.flood_refused.fetch_add(1, Ordering::Relaxed);
            }
            _ => open.push(tcp),
        }
    }
    tally.flood_held.store(open.len() as u64, Ordering::Relaxed);
    stop.cancelled().await;
}

async fn refresh_flood(
    url: reqwest::Url,
    source: std::net::IpAddr,
    stop: CancellationToken,
    tally: Arc<Tally>,
) {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .local_address(source)
        .build()
    else {
        return;
    };
    let mut sent = 0;
    while !stop.is_cancelled() && sent < MAX_REFRESHES_PER_WORKER {
        let token: String = (0..43).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            answer = client.post(url.clone()).json(&serde_json::json!({"refresh_token": token})).send() => answer,
        };
        sent += 1;
        tally.refreshes.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                tally.refreshes_limited.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
