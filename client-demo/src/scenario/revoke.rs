//! `revoke`: N sockets over S sessions, then the sessions revoked through the admin
//! API, one request per session at R per second or all at once (`--all`, one
//! `revoke-all`). Measures, per socket, the time from sending its session's revoke to
//! receiving its close frame, and checks that every socket got 4001 `revoked`.

use super::{Ctx, Pacer, check_open_files, join_all, open_paced, settings};
use crate::cli::RevokeArgs;
use crate::conn::{self, Closed};
use crate::report::Report;
use crate::stats::SharedHist;
use crate::{bots, progress};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tether_shared::{SessionId, close};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a socket fared: which session it belongs to, and how it ended.
struct SocketEnd {
    index: u32,
    session: usize,
    /// Which of the socket targets it connected to.
    node: usize,
    opened: bool,
    closed: Option<Closed>,
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
}

/// One session's revoke request.
#[derive(Clone, Default)]
struct Request {
    sent: Option<Instant>,
    answered: Option<Instant>,
    failed: Option<String>,
}

pub async fn run(ctx: &Ctx<'_>, args: &RevokeArgs, open_files: u64) -> anyhow::Result<Report> {
    check_open_files(args.sockets, open_files);
    let admin = bots::admin_token(ctx).await?;
    let sessions = bots::log_in(ctx, args.sessions).await?;
    let welcome = SharedHist::default();
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
    let patience = args.common.connect_timeout;
    let socket_targets: Vec<Arc<crate::target::Target>> = if args.socket_targets.is_empty() {
        vec![ctx.target.clone()]
    } else {
        args.socket_targets
            .iter()
            .map(|text| crate::target::Target::parse(text, &ctx.common.source_ips).map(Arc::new))
            .collect::<anyhow::Result<_>>()?
    };
    let tasks = open_paced(args.sockets, 0.0, args.concurrency, |index, permit| {
        let session = index as usize % sessions.len();
        let node = index as usize % socket_targets.len();
        let token = sessions[session].token.clone();
        let (target, failures) = (socket_targets[node].clone(), ctx.failures.clone());
        let (welcome, counts, stop, bar) = (welcome.clone(), counts.clone(), stop.clone(), bar.clone());
        async move {
            let opened = conn::open(&target, &token, patience).await;
            bar.inc(1);
            // Counted before the permit goes back: once all are back, the counts are final.
            let mut socket = match opened {
                Ok(socket) => socket,
                Err(kind) => {
                    failures.add(kind);
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    return SocketEnd { index, session, node, opened: false, closed: None };
                }
            };
            welcome.record(socket.time_to_welcome);
            counts.opened.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            let closed = conn::read_until_closed(&mut socket.ws, &stop).await;
            if closed.is_some() {
                counts.closed.fetch_add(1, Ordering::Relaxed);
                conn::finish_after_close(&mut socket.ws, Duration::from_secs(2)).await;
            }
            SocketEnd { index, session, node, opened: true, closed }
        }
    })
    .await;
    drop(ticker);
    bar.finish();
    let opened = counts.opened.load(Ordering::Relaxed);

    // Revoke.
    let request_latency = SharedHist::default();
    let mut requests = vec![Request::default(); sessions.len()];
    let (mut sessions_revoked, mut sockets_closed) = (0u64, 0u64);
    let revoke_started = Instant::now();
    if args.all {
        eprintln!("revoking every session but the admin's with one revoke-all");
        let sent = Instant::now();
        let result = ctx.api.revoke_all(&admin, &args.reason).await;
        let answered = Instant::now();
        request_latency.record(answered - sent);
        let failed = match result {
            Ok(answer) => {
                sessions_revoked += answer.sessions_revoked;
                sockets_closed += answer.sockets_closed;
                None
            }
            Err(kind) => {
                ctx.failures.add(kind.clone());
                Some(kind)
            }
        };
        requests.fill(Request { sent: Some(sent), answered: Some(answered), failed });
    } else {
        let bar = progress::counter(sessions.len() as u64, "revoke");
        let pacer = Pacer::new(args.rate);
        let mut sent = JoinSet::new();
        for (k, session) in sessions.iter().enumerate() {
            pacer.wait(k as u32).await;
            let (api, admin, reason, id, bar) =
                (ctx.api.clone(), admin.clone(), args.reason.clone(), session.id, bar.clone());
            sent.spawn(async move {
                let at = Instant::now();
                let result = api.revoke_session(&admin, id, &reason).await;
                bar.inc(1);
                (k, at, Instant::now(), result)
            });
        }
        for (k, at, answered, result) in join_all(sent).await {
            request_latency.record(answered - at);
            let failed = match result {
                Ok(answer) => {
                    sessions_revoked += answer.sessions_revoked;
                    sockets_closed += answer.sockets_closed;
                    None
                }
                Err(kind) => {
                    ctx.failures.add(kind.clone());
                    Some(kind)
                }
            };
            requests[k] = Request { sent: Some(at), answered: Some(answered), failed };
        }
        bar.finish_and_clear();
    }

    // Wait for the close frames, at most --duration after the last answer.
    let wait = args.common.duration;
    let deadline = Instant::now() + wait;
    let bar = progress::counter(opened, "closes");
    while counts.closed.load(Ordering::Relaxed) < opened && Instant::now() < deadline {
        bar.set_position(counts.closed.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bar.finish_and_clear();
    stop.cancel();
    let mut ends = join_all(tasks).await;
    ends.sort_by_key(|end| end.index);

    let mut report = Report::new("revoke", settings(args));
    let close_latency = SharedHist::default();
    let session_ids: Vec<SessionId> = sessions.iter().map(|session| session.id).collect();
    let tally = judge(&ends, &requests, &session_ids, wait, &close_latency, &mut report);
    let last_close = tally.last_close.unwrap_or(revoke_started);
    let requests_failed = requests.iter().filter(|request| request.failed.is_some()).count();
    report.figure("sockets requested", args.sockets, "");
    report.figure("sessions logged in", sessions.len() as u32, "");
    report.figure("sockets opened (welcome received)", opened as f64, "");
    report.figure("revoke requests sent", if args.all { 1 } else { sessions.len() as u32 }, "");
    report.figure(
        "revoke requests failed",
        if args.all { requests_failed.min(1) } else { requests_failed } as u32,
        "",
    );
    report.figure("sessions revoked (sum of answers)", sessions_revoked as f64, "");
    report.figure("sockets closed (sum of answers)", sockets_closed as f64, "");
    report.figure("sockets that got a close frame", tally.got_close, "");
    report.figure("  with 4001 revoked", tally.expected, "");
    report.figure("  received before the HTTP answer", tally.before_answer, "");
    report.figure("  received after the HTTP answer", tally.after_answer, "");
    report.figure("first request to last close", (last_close - revoke_started).as_secs_f64(), "s");
    report.latency("revoke sent -> close frame", close_latency.snapshot());
    if socket_targets.len() > 1 {
        for (node, target) in socket_targets.iter().enumerate() {
            let on_node = SharedHist::default();
            for end in ends.iter().filter(|end| end.node == node) {
                let sent = requests[end.session].sent;
                if let (Some(sent), Some(closed)) = (sent, &end.closed)
                    && let Some(latency) = closed.at.checked_duration_since(sent)
                {
                    on_node.record(latency);
                }
            }
            report.latency(&format!("  on {}", target.base), on_node.snapshot());
        }
    }
    report.latency("revoke sent -> HTTP answer", request_latency.snapshot());
    report.latency("time to welcome", welcome.snapshot());
    Ok(report)
}

/// How the opened sockets ended, against what their sessions' revocations promise.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    got_close: u32,
    /// Closed 4001 `revoked`.
    expected: u32,
    before_answer: u32,
    after_answer: u32,
    last_close: Option<Instant>,
}

/// Checks every opened socket: a close frame, after its session's request was sent,
/// with 4001 `revoked`. Records request → close latencies; anything else is a mismatch.
fn judge(
    ends: &[SocketEnd],
    requests: &[Request],
    session_ids: &[SessionId],
    wait: Duration,
    close_latency: &SharedHist,
    report: &mut Report,
) -> Tally {
    let mut tally = Tally::default();
    for end in ends.iter().filter(|end| end.opened) {
        let request = &requests[end.session];
        let socket = format!("socket {} (session {})", end.index, session_ids[end.session]);
        let Some(closed) = &end.closed else {
            report.mismatch(match &request.failed {
                Some(kind) => format!("{socket}: no close frame; its revoke failed: {kind}"),
                None => format!("{socket}: no close frame within {} s of the answers", wait.as_secs_f64()),
            });
            continue;
        };
        tally.got_close += 1;
        tally.last_close = tally.last_close.max(Some(closed.at));
        let Some(latency) = request.sent.and_then(|sent| closed.at.checked_duration_since(sent)) else {
            report.mismatch(format!("{socket}: closed before its revoke was sent: {}", closed.kind()));
            continue;
        };
        close_latency.record(latency);
        if request.answered.is_some_and(|answered| closed.at <= answered) {
            tally.before_answer += 1;
        } else {
            tally.after_answer += 1;
        }
        if closed.code == Some(close::REVOKED) && closed.kind() == "4001 revoked" {
            tally.expected += 1;
        } else {
            report.mismatch(format!(
                "{socket}: expected 4001 \"revoked\", got {} {:?}",
                closed.code.map_or("no code".to_owned(), |code| code.to_string()),
                closed.reason
            ));
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socket_must_end_4001_revoked_after_its_request() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let closed = |ms: u64, code: u16, reason: &str| {
            Some(Closed { at: at(ms), code: Some(code), reason: reason.to_owned() })
        };
        let end = |index: u32, session: usize, closed: Option<Closed>| SocketEnd {
            node: 0,
            index,
            session,
            opened: true,
            closed,
        };
        let requests = vec![
            Request { sent: Some(at(10)), answered: Some(at(20)), failed: None },
            Request { sent: Some(at(10)), answered: None, failed: Some("revoke: http 500".into()) },
        ];
        let ends = vec![
            end(0, 0, closed(15, 4001, "revoked: loadgen")),
            end(1, 0, closed(25, 4001, "revoked")),
            end(2, 0, closed(16, 4004, "kicked: loadgen")),
            end(3, 0, closed(5, 4001, "revoked")),
            end(4, 0, None),
            end(5, 1, None),
            SocketEnd { index: 6, session: 0, node: 0, opened: false, closed: None },
        ];
        let mut report = Report::new("revoke", serde_json::Value::Null);
        let latencies = SharedHist::default();
        let ids = [SessionId::new_random(), SessionId::new_random()];
        let tally = judge(&ends, &requests, &ids, Duration::from_secs(1), &latencies, &mut report);
        assert_eq!(
            tally,
            Tally { got_close: 4, expected: 2, before_answer: 2, after_answer: 1, last_close: Some(at(25)) }
        );
        assert_eq!(latencies.snapshot().len(), 3);
        assert_eq!(report.mismatch_count, 4, "{:?}", report.mismatches);
        assert!(report.mismatches[0].contains("expected 4001") && report.mismatches[0].contains("kicked"));
        assert!(report.mismatches[1].contains("before its revoke was sent"));
        assert!(report.mismatches[2].contains("no close frame within"));
        assert!(report.mismatches[3].contains("its revoke failed"));
    }
}
