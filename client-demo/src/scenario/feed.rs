//! `feed`: how fast a revocation reaches another service through the revocation
//! stream of another node. N bot sessions log in on node A (`--revoke-on`); a consumer
//! follows `GET /api/auth/revocations` on node B (`--follow-on`) from now on; then the
//! sessions log out on A, K at a time. The contract says each logout shows up on every
//! node's stream exactly once, as `event: revoked` with its `sid`: the report gives the
//! time from the logout's 204 to that event, and counts the events lost and repeated.
//!
//! Bounded: N logouts, K in flight, the stream read until every event has come or
//! `PATIENCE` after the last logout, lines and events capped in size, and the whole run
//! within `--max-time`.

use super::{Ctx, settings};
use crate::api::{Api, describe_reqwest, describe_status};
use crate::cli::{CREDENTIAL_HOW, Common, FeedArgs};
use crate::report::Report;
use crate::stats::{Failures, SharedHist};
use crate::target::Target;
use crate::{bots, progress};
use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, stream};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_shared::SessionId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait for the missing events after the last logout's answer; later ones count as lost.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long the stream is still read once every event has come: a repeated event comes
/// after the first, and the contract says exactly once.
const LINGER: Duration = Duration::from_millis(500);
/// Longest line, and longest event, accepted from the stream: an event is a few hundred
/// bytes, so anything near this is not the contract's stream.
const MAX_LINE: usize = 64 * 1024;
const MAX_EVENT: usize = 256 * 1024;

/// One session's logout on A.
struct Logout {
    session: SessionId,
    /// Just before the request was sent.
    sent: Instant,
    /// When the 204 came, or why none did.
    answered: Result<Instant, String>,
}

/// The first event for one of this run's sessions, and how many came.
#[derive(Clone, Copy)]
struct Arrival {
    first: Instant,
    count: u32,
}

/// What the stream brought.
#[derive(Default)]
struct Seen {
    /// Per session of this run that an event named.
    ours: HashMap<SessionId, Arrival>,
    /// `revoked` events for other sessions: other traffic on the server.
    others: u64,
    /// Keep-alive comments.
    comments: u64,
    /// Why the stream stopped before it was told to, if it did.
    ended: Option<String>,
}

/// The `data` of a `revoked` event, as far as it matters here.
#[derive(serde::Deserialize)]
struct Revoked {
    sid: SessionId,
    #[serde(default)]
    kind: String,
}

pub async fn run(ctx: &Ctx<'_>, args: &FeedArgs) -> anyhow::Result<Report> {
    let (client_id, client_secret) = args.service.require("feed")?;
    let common = ctx.common;
    let revoke_on = node("--revoke-on", args.revoke_on.as_deref(), common)?;
    let follow_on = node("--follow-on", args.follow_on.as_deref(), common)?;
    // Compared by socket address, so that `localhost` and 127.0.0.1 are one node.
    let single_node = revoke_on.addr == follow_on.addr;
    eprintln!(
        "logging out on {}, following the revocation stream on {}{}",
        revoke_on.base,
        follow_on.base,
        if single_node { " (one node)" } else { "" }
    );
    let api_a = Arc::new(Api::new(revoke_on.clone())?);
    let api_b = Api::new(follow_on.clone())?;
    // The logins go to A, counted in the run's failures and login latency like any other.
    let on_a = Ctx {
        common,
        target: revoke_on.clone(),
        api: api_a.clone(),
        failures: ctx.failures.clone(),
        login_latency: ctx.login_latency.clone(),
    };
    let sessions = bots::log_in(&on_a, args.revocations).await?;
    let ours: Arc<HashSet<SessionId>> = Arc::new(sessions.iter().map(|session| session.id).collect());

    // The stream starts at B's head when B answers: every logout sent after this is in it.
    let request = api_b
        .client()
        .get(follow_on.url("/api/auth/revocations"))
        .basic_auth(&client_id, Some(&client_secret))
        .header(ACCEPT, "text/event-stream")
        // The client's bound on a whole request would cut the stream; the run's bound instead.
        .timeout(common.max_time);
    let response = match tokio::time::timeout(common.connect_timeout, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => bail!("{} (on {})", describe_reqwest("revocation stream", &error), follow_on.base),
        Err(_) => bail!(
            "revocation stream: no answer from {} within --connect-timeout ({} s)",
            follow_on.base,
            common.connect_timeout.as_secs_f64()
        ),
    };
    let status = response.status();
    if status != StatusCode::OK {
        let body = response.bytes().await.unwrap_or_default();
        let kind = describe_status("revocation stream", status, &body);
        if kind.ends_with("invalid_client") {
            bail!("{kind} (on {}): check --client-id and --client-secret; {CREDENTIAL_HOW}", follow_on.base);
        }
        bail!("{kind} (on {})", follow_on.base);
    }
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok());
    if !content_type.is_some_and(|value| value.starts_with("text/event-stream")) {
        bail!(
            "revocation stream: {} answered 200 with content type {content_type:?}, not text/event-stream: \
             is it a server with the revocation feed?",
            follow_on.base
        );
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    let reader = tokio::spawn(follow(response, ours, seen.clone(), ctx.failures.clone(), stop.clone()));

    // Log out, K at a time.
    let bar = progress::counter(sessions.len() as u64, "logout");
    let ticker = progress::live(&bar, false, {
        let seen = seen.clone();
        move || format!("{} events", seen.lock().expect("feed lock").ours.len())
    });
    let url = revoke_on.url("/api/auth/logout");
    let logout_started = Instant::now();
    let logouts: Vec<Logout> = stream::iter(sessions.iter().enumerate())
        .map(|(k, session)| {
            let (client, url, bar) = (api_a.client_for(k).clone(), url.clone(), bar.clone());
            async move {
                let sent = Instant::now();
                let answered = match client.post(url).bearer_auth(&session.token).send().await {
                    Ok(response) if response.status() == StatusCode::NO_CONTENT => Ok(Instant::now()),
                    Ok(response) => {
                        let status = response.status();
                        let body = response.bytes().await.unwrap_or_default();
                        Err(describe_status("logout", status, &body))
                    }
                    Err(error) => Err(describe_reqwest("logout", &error)),
                };
                bar.inc(1);
                Logout { session: session.id, sent, answered }
            }
        })
        .buffer_unordered(args.batch as usize)
        .collect()
        .await;
    let logout_phase = logout_started.elapsed().as_secs_f64();
    drop(ticker);
    bar.finish_and_clear();

    // Wait for the missing events, at most PATIENCE after the last answer.
    let expected: Vec<SessionId> =
        logouts.iter().filter(|logout| logout.answered.is_ok()).map(|logout| logout.session).collect();
    let bar = progress::counter(expected.len() as u64, "events");
    let mut deadline = Instant::now() + PATIENCE;
    let mut lingering = false;
    while Instant::now() < deadline {
        let (arrived, complete, ended) = {
            let seen = seen.lock().expect("feed lock");
            // The count first: the whole check costs a lookup per session.
            let complete = seen.ours.len() >= expected.len()
                && expected.iter().all(|session| seen.ours.contains_key(session));
            (seen.ours.len().min(expected.len()), complete, seen.ended.is_some())
        };
        bar.set_position(arrived as u64);
        if ended {
            break;
        }
        if complete && !lingering {
            lingering = true;
            deadline = deadline.min(Instant::now() + LINGER);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bar.finish_and_clear();
    stop.cancel();
    if let Err(error) = reader.await {
        eprintln!("the stream reader failed: {error}");
    }
    let seen = std::mem::take(&mut *seen.lock().expect("feed lock"));

    let logout_latency = SharedHist::default();
    for logout in &logouts {
        match &logout.answered {
            Ok(answered) => logout_latency.record(*answered - logout.sent),
            Err(kind) => ctx.failures.add(kind.clone()),
        }
    }
    let mut settings = settings(args);
    if let Some(flags) = settings.as_object_mut() {
        // The nodes as resolved, not the defaults left unsaid.
        flags.insert("revoke_on".to_owned(), revoke_on.base.as_str().into());
        flags.insert("follow_on".to_owned(), follow_on.base.as_str().into());
    }
    let mut report = Report::new("feed", settings);
    let (delivery, since_sent) = (SharedHist::default(), SharedHist::default());
    let tally = judge(&logouts, &seen, &delivery, &since_sent, &mut report);
    let answered = expected.len();
    report.figure("nodes (1: logouts and stream on one node)", if single_node { 1.0 } else { 2.0 }, "");
    report.figure("sessions logged in on --revoke-on", sessions.len() as f64, "");
    report.figure("logouts in flight at once", args.batch, "");
    report.figure("logouts answered 204", answered as f64, "");
    report.figure("logouts failed", (logouts.len() - answered) as f64, "");
    report.figure("logout phase", logout_phase, "s");
    let per_second = if logout_phase > 0.0 { answered as f64 / logout_phase } else { 0.0 };
    report.figure("logouts per second", per_second, "/s");
    report.figure("events expected (logouts answered 204)", tally.expected, "");
    report.figure("events received", tally.received, "");
    report.figure(format!("events lost (none within {} s)", PATIENCE.as_secs()), tally.lost, "");
    report.figure("duplicate events (a sid again)", tally.duplicates, "");
    report.figure("  received before the logout's 204", tally.before_answer, "");
    report.figure("events for logouts that failed", tally.of_failed_logouts, "");
    report.figure("events for other sessions", seen.others as f64, "");
    report.figure("keep-alive comments", seen.comments as f64, "");
    if let Some(last) = tally.last_event {
        report.figure("first logout to last event", (last - logout_started).as_secs_f64(), "s");
    }
    report.latency("logout 204 -> event", delivery.snapshot());
    report.latency("logout sent -> event", since_sent.snapshot());
    report.latency("logout sent -> 204", logout_latency.snapshot());
    if single_node {
        report.hints.push(format!(
            "--revoke-on and --follow-on are one node ({}): this measured a node's own stream, not \
             delivery across nodes; give --follow-on another node of the cluster",
            follow_on.base
        ));
    }
    if let Some(why) = &seen.ended {
        report.hints.push(format!(
            "the revocation stream ended before the run did ({why}): the events after it count as lost"
        ));
    }
    if tally.before_answer > 0 {
        report.hints.push(format!(
            "{} events arrived before their logout's 204 (the stream and the answer come on different \
             connections): they count as 0 in \"logout 204 -> event\"",
            tally.before_answer
        ));
    }
    Ok(report)
}

/// `--revoke-on` or `--follow-on` as a target, `--target` when not given; loopback only.
fn node(flag: &str, given: Option<&str>, common: &Common) -> anyhow::Result<Arc<Target>> {
    let text = given.unwrap_or(common.target.as_str());
    let target = Target::parse(text, &common.source_ips).with_context(|| format!("{flag} {text:?}"))?;
    Ok(Arc::new(target))
}

/// Reads the stream until `stop`, its end, or `event: reset`, recording when each event
/// for one of `ours` arrived.
async fn follow(
    mut response: reqwest::Response,
    ours: Arc<HashSet<SessionId>>,
    seen: Arc<Mutex<Seen>>,
    failures: Failures,
    stop: CancellationToken,
) {
    let mut parser = SseParser::default();
    let mut items = Vec::new();
    let why = loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => return,
            chunk = response.chunk() => chunk,
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break "revocation stream: ended by the server".to_owned(),
            Err(error) => break describe_reqwest("revocation stream", &error),
        };
        // Everything this chunk completes arrived now.
        let at = Instant::now();
        if let Err(problem) = parser.push(&chunk, &mut items) {
            break format!("revocation stream: {problem}");
        }
        if let Some(why) = take(&mut items, at, &ours, &seen, &failures) {
            break why;
        }
    };
    failures.add(why.clone());
    seen.lock().expect("feed lock").ended = Some(why);
}

/// Records the items one chunk completed; `Some(why)` when the stream must stop there.
fn take(
    items: &mut Vec<Item>,
    at: Instant,
    ours: &HashSet<SessionId>,
    seen: &Mutex<Seen>,
    failures: &Failures,
) -> Option<String> {
    let mut seen = seen.lock().expect("feed lock");
    for item in items.drain(..) {
        let (name, data) = match item {
            Item::Comment => {
                seen.comments += 1;
                continue;
            }
            Item::Event { name, data } => (name, data),
        };
        match name.as_str() {
            "revoked" => {}
            // The server cannot go on from where this stream was: what follows would not
            // be the events after the logouts.
            "reset" => return Some("revocation stream: event: reset".to_owned()),
            _ => {
                failures.add("revocation stream: an event other than revoked or reset");
                continue;
            }
        }
        let Ok(event) = serde_json::from_str::<Revoked>(&data) else {
            failures.add("revocation stream: a revoked event not understood");
            continue;
        };
        if !ours.contains(&event.sid) {
            seen.others += 1;
            continue;
        }
        if event.kind != "logout" {
            failures.add(format!("revocation stream: kind {:?} for a session logged out", event.kind));
        }
        seen.ours
            .entry(event.sid)
            .and_modify(|arrival| arrival.count += 1)
            .or_insert(Arrival { first: at, count: 1 });
    }
    None
}

/// What the stream said, once a blank line (or a comment line) completed it.
#[derive(Debug, PartialEq)]
enum Item {
    Comment,
    Event { name: String, data: String },
}

/// Server-Sent Events from chunks that may split a line, or a UTF-8 character, anywhere.
/// Lines end in LF or CRLF (a lone CR, which the format also allows, is not what the
/// server writes). The `id` (the cursor) is not kept: it matters only to a consumer
/// that resumes.
#[derive(Default)]
struct SseParser {
    /// The line not yet ended.
    line: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8], items: &mut Vec<Item>) -> Result<(), String> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_ended(&line, items)?;
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
        Ok(())
    }

    fn line_ended(&mut self, line: &[u8], items: &mut Vec<Item>) -> Result<(), String> {
        let line = std::str::from_utf8(line).map_err(|_| "a line that is not UTF-8".to_owned())?;
        if line.is_empty() {
            if self.name.is_some() || self.data.is_some() {
                items.push(Item::Event {
                    name: self.name.take().unwrap_or_else(|| "message".to_owned()),
                    data: self.data.take().unwrap_or_default(),
                });
            }
            return Ok(());
        }
        if line.starts_with(':') {
            items.push(Item::Comment);
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => {
                // Each further data line joins the event's data after a newline.
                let data = match self.data.take() {
                    Some(mut data) => {
                        data.push('\n');
                        data.push_str(value);
                        data
                    }
                    None => value.to_owned(),
                };
                if data.len() > MAX_EVENT {
                    return Err(format!("an event longer than {MAX_EVENT} bytes"));
                }
                self.data = Some(data);
            }
            // `id` and `retry` matter to a consumer that reconnects, which this one does not.
            _ => {}
        }
        Ok(())
    }
}

/// How the logouts' events came, against the contract's exactly once.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    /// Logouts answered 204.
    expected: u32,
    received: u32,
    lost: u32,
    /// Events beyond the first for a session.
    duplicates: u32,
    before_answer: u32,
    /// Events for sessions whose logout failed (it may have revoked all the same).
    of_failed_logouts: u32,
    last_event: Option<Instant>,
}

/// Checks every logout against what the stream brought, recording the latencies of the
/// received events; a lost or repeated event is a mismatch.
fn judge(
    logouts: &[Logout],
    seen: &Seen,
    delivery: &SharedHist,
    since_sent: &SharedHist,
    report: &mut Report,
) -> Tally {
    let mut tally = Tally::default();
    for logout in logouts {
        let arrival = seen.ours.get(&logout.session);
        if let Some(arrival) = arrival
            && arrival.count > 1
        {
            tally.duplicates += arrival.count - 1;
            report.mismatch(format!("session {}: {} events, not one", logout.session, arrival.count));
        }
        match (&logout.answered, arrival) {
            (Ok(answered), Some(arrival)) => {
                tally.expected += 1;
                tally.received += 1;
                if arrival.first < *answered {
                    tally.before_answer += 1;
                }
                // One that came before the 204 was delivered no later than the answer.
                delivery.record(arrival.first.saturating_duration_since(*answered));
                since_sent.record(arrival.first.saturating_duration_since(logout.sent));
                tally.last_event = tally.last_event.max(Some(arrival.first));
            }
            (Ok(_), None) => {
                tally.expected += 1;
                tally.lost += 1;
                report.mismatch(match &seen.ended {
                    Some(why) => format!("session {}: no event; the stream had ended: {why}", logout.session),
                    None => format!(
                        "session {}: no event within {} s of the last logout",
                        logout.session,
                        PATIENCE.as_secs()
                    ),
                });
            }
            (Err(_), Some(_)) => tally.of_failed_logouts += 1,
            (Err(_), None) => {}
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(text: &str, piece: usize) -> Vec<Item> {
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            parser.push(chunk, &mut items).unwrap();
        }
        items
    }

    #[test]
    fn events_come_out_whole_however_the_chunks_split_them() {
        let text = ": keep-alive\n\nid: 7-00000000000000000000000000000001\nevent: revoked\n\
                    data: {\"sid\":\"é\",\"kind\":\"logout\"}\n\n:\r\nevent: reset\r\ndata: {}\r\n\r\n";
        let expected = vec![
            Item::Comment,
            Item::Event { name: "revoked".into(), data: "{\"sid\":\"é\",\"kind\":\"logout\"}".into() },
            Item::Comment,
            Item::Event { name: "reset".into(), data: "{}".into() },
        ];
        for piece in 1..=text.len() {
            assert_eq!(parse_in_pieces(text, piece), expected, "in pieces of {piece}");
        }
    }

    #[test]
    fn data_lines_join_and_an_unended_event_waits() {
        let items = parse_in_pieces("data: a\ndata:b\nretry: 5\n\nevent: revoked\ndata: x\n", 4);
        assert_eq!(items, vec![Item::Event { name: "message".into(), data: "a\nb".into() }]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::default();
        let mut items = Vec::new();
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(parser.push(&long, &mut items).is_err());
    }

    #[test]
    fn revoked_events_are_counted_for_our_sessions_only_and_a_reset_stops() {
        let (mine, theirs) = (SessionId::new_random(), SessionId::new_random());
        let ours: HashSet<SessionId> = [mine].into();
        let seen = Mutex::new(Seen::default());
        let failures = Failures::default();
        let revoked = |sid: SessionId| {
            let data = serde_json::json!({"sid": sid, "sub": SessionId::new_random(), "kind": "logout"});
            Item::Event { name: "revoked".into(), data: data.to_string() }
        };
        let at = Instant::now();
        let mut items = vec![Item::Comment, revoked(mine), revoked(theirs), revoked(mine)];
        assert_eq!(take(&mut items, at, &ours, &seen, &failures), None);
        let mut items = vec![Item::Event { name: "reset".into(), data: "{}".into() }, revoked(mine)];
        assert!(take(&mut items, at, &ours, &seen, &failures).is_some());
        let seen = seen.into_inner().unwrap();
        assert_eq!((seen.comments, seen.others), (1, 1));
        assert_eq!(seen.ours[&mine].count, 2);
        assert!(failures.snapshot().is_empty());
    }

    #[test]
    fn every_answered_logout_needs_exactly_one_event() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::new_random()).collect();
        let logout =
            |k: usize, answered: Result<Instant, String>| Logout { session: ids[k], sent: at(0), answered };
        let logouts = vec![
            logout(0, Ok(at(10))),
            logout(1, Ok(at(10))),
            logout(2, Ok(at(10))),
            logout(3, Ok(at(10))),
            logout(4, Err("logout: http 500".into())),
        ];
        let mut seen = Seen::default();
        seen.ours.insert(ids[0], Arrival { first: at(30), count: 1 });
        seen.ours.insert(ids[1], Arrival { first: at(5), count: 1 });
        seen.ours.insert(ids[2], Arrival { first: at(40), count: 3 });
        seen.ours.insert(ids[4], Arrival { first: at(50), count: 1 });
        let (delivery, since_sent) = (SharedHist::default(), SharedHist::default());
        let mut report = Report::new("feed", serde_json::Value::Null);
        let tally = judge(&logouts, &seen, &delivery, &since_sent, &mut report);
        assert_eq!(
            tally,
            Tally {
                expected: 4,
                received: 3,
                lost: 1,
                duplicates: 2,
                before_answer: 1,
                of_failed_logouts: 1,
                last_event: Some(at(40)),
            }
        );
        let delivery = delivery.snapshot();
        assert_eq!(delivery.len(), 3);
        assert!(delivery.max().abs_diff(30_000) < 100, "{}", delivery.max());
        assert_eq!(report.mismatch_count, 2, "{:?}", report.mismatches);
        assert!(report.mismatches[0].contains("3 events, not one"));
        assert!(report.mismatches[1].contains("no event within"));
    }
}
