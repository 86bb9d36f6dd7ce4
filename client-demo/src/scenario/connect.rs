//! `connect`: N authenticated sockets over S sessions, started at R per second, held
//! open for H, then closed. Measures how fast upgrades go and how long each socket
//! took from the TCP connect to `welcome`.

use super::{CLOSE_PATIENCE, Ctx, check_open_files, join_all, open_paced, settings};
use crate::cli::ConnectArgs;
use crate::report::Report;
use crate::stats::SharedHist;
use crate::{bots, conn, progress};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

enum Outcome {
    Failed,
    /// Opened, then ended by the server (or the network) during the hold.
    Dropped,
    /// Open until the end of the hold; `clean` when the server answered our close.
    Held {
        clean: bool,
    },
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Microseconds from the start of the opening phase to the latest `welcome`.
    last_welcome_us: AtomicU64,
}

pub async fn run(ctx: &Ctx<'_>, args: &ConnectArgs, open_files: u64) -> anyhow::Result<Report> {
    check_open_files(args.sockets, open_files);
    let sessions = bots::log_in(ctx, args.sessions).await?;
    let hold = args.hold.unwrap_or(args.common.duration);
    let welcome = SharedHist::default();
    let upgrade = SharedHist::default();
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();

    let bar = progress::counter(u64::from(args.sockets), "connect");
    let ticker = progress::live(&bar, false, {
        let counts = counts.clone();
        move || {
            format!(
                "open {} failed {}",
                counts.opened.load(Ordering::Relaxed),
                counts.failed.load(Ordering::Relaxed)
            )
        }
    });
    let started = Instant::now();
    let patience = args.common.connect_timeout;
    let tasks = open_paced(args.sockets, args.rate, args.concurrency, |i, permit| {
        let token = sessions[i as usize % sessions.len()].token.clone();
        let (target, failures) = (ctx.target.clone(), ctx.failures.clone());
        let (welcome, upgrade, counts, stop, bar) =
            (welcome.clone(), upgrade.clone(), counts.clone(), stop.clone(), bar.clone());
        async move {
            let opened = conn::open(&target, &token, patience).await;
            bar.inc(1);
            // Counted before the permit goes back: once all are back, the counts are final.
            let mut socket = match opened {
                Ok(socket) => socket,
                Err(kind) => {
                    failures.add(kind);
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Failed;
                }
            };
            welcome.record(socket.time_to_welcome);
            upgrade.record(socket.time_to_upgrade);
            counts.opened.fetch_add(1, Ordering::Relaxed);
            let since_start = (socket.welcomed_at - started).as_micros() as u64;
            counts.last_welcome_us.fetch_max(since_start, Ordering::Relaxed);
            drop(permit);
            match conn::read_until_closed(&mut socket.ws, &stop).await {
                Some(closed) => {
                    failures.add(format!("closed during hold: {}", closed.kind()));
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                    Outcome::Dropped
                }
                None => Outcome::Held { clean: conn::close_normally(&mut socket.ws, CLOSE_PATIENCE).await },
            }
        }
    })
    .await;
    let opening = started.elapsed();
    drop(ticker);
    bar.finish();

    let opened = counts.opened.load(Ordering::Relaxed);
    let hold_bar = progress::timer(hold, "hold");
    let ticker = progress::live(&hold_bar, true, {
        let counts = counts.clone();
        move || format!("open {}", opened - counts.dropped.load(Ordering::Relaxed))
    });
    tokio::time::sleep(hold).await;
    drop(ticker);
    hold_bar.finish_and_clear();
    stop.cancel();
    eprintln!("closing {} sockets", opened - counts.dropped.load(Ordering::Relaxed));
    let outcomes = join_all(tasks).await;

    let mut report = Report::new("connect", settings(args));
    let last_welcome = counts.last_welcome_us.load(Ordering::Relaxed) as f64 / 1e6;
    let held = outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Held { .. })).count();
    let clean = outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Held { clean: true })).count();
    let dropped = outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Dropped)).count();
    let failed = outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Failed)).count();
    report.figure("sockets requested", args.sockets, "");
    report.figure("sessions logged in", sessions.len() as u32, "");
    report.figure("sockets opened (welcome received)", opened as f64, "");
    report.figure("sockets failed to open", failed as f64, "");
    report.figure("opening phase", opening.as_secs_f64(), "s");
    if args.rate > 0.0 {
        report.figure("upgrade rate asked", args.rate, "/s");
    }
    report.figure(
        "upgrade rate achieved (welcomes / time to last)",
        if last_welcome > 0.0 { opened as f64 / last_welcome } else { 0.0 },
        "/s",
    );
    report.figure("held after the last socket opened", hold.as_secs_f64(), "s");
    report.figure("sockets dropped during the hold", dropped as f64, "");
    report.figure("sockets open at the end of the hold", held as f64, "");
    report.figure("closes answered by the server", clean as f64, "");
    report.latency("time to upgrade (101)", upgrade.snapshot());
    report.latency("time to welcome", welcome.snapshot());
    Ok(report)
}
