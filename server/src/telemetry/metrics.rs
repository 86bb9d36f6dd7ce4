//! Prometheus metrics: every name in one place, the exporter installed once per
//! process, and the gauges read off the session registry at scrape time (so they
//! are exact, and nothing on the hot path maintains them).

use crate::app::AppState;
use crate::revocation::RevokeKind;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Seconds, from half a millisecond (a close on loopback) to five seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The process's exporter; several apps in one process (tests) share it.
pub fn exporter() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the buckets are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// The text a `/metrics` scrape answers.
pub fn render(state: &AppState) -> String {
    let census = state.sessions.census(crate::store::now());
    gauge!("tether_sockets_open").set(census.sockets_open as f64);
    gauge!("tether_sessions_active").set(census.sessions_active as f64);
    // Must stay 0: a revoked session whose socket is still registered.
    gauge!("tether_sessions_revoked_still_connected").set(census.revoked_still_connected as f64);
    // Live rooms: an empty room ends after its grace.
    gauge!("tether_rooms").set(state.rooms.len() as f64);
    // A cluster node: how far it has applied the revocation log, and whether it is too
    // far behind to vouch for its sessions (should be 0 but during a database outage).
    gauge!("tether_revocation_log_applied_seq").set(state.log.applied() as f64);
    gauge!("tether_revocations_in_flight").set(state.revocations.len() as f64);
    gauge!("tether_node_stale").set(if state.log.is_stale() { 1.0 } else { 0.0 });
    gauge!("tether_password_hashes_running").set(state.passwords.running() as f64);
    gauge!("tether_password_hashes_running_peak").set(state.passwords.peak() as f64);
    gauge!("tether_password_hashes_waiting").set(state.passwords.waiting() as f64);
    let mut text = exporter().render();
    SNAPSHOT_SEND_DELAY.render(
        "tether_snapshot_send_delay_seconds",
        "From a room tick's start until a member's snapshot of it was written to its connection.",
        &mut text,
    );
    text
}

pub fn revoked(kind: RevokeKind, sessions: u64) {
    counter!("tether_revocations_total", "kind" => kind.as_str()).increment(sessions);
}

/// From a revoking call's start until every affected socket had its close frame.
pub fn revoke_to_close(elapsed: Duration) {
    histogram!("tether_revoke_to_close_seconds").record(elapsed.as_secs_f64());
}

/// A revocation stream ended because its consumer stopped reading.
pub fn feed_consumer_cut_off() {
    counter!("tether_revocation_stream_cut_off_total").increment(1);
}

/// Revocation streams open on this node (up on connect, down when one ends).
pub fn feed_streams(change: f64) {
    gauge!("tether_revocation_streams").increment(change);
}

/// Introspection answers, by whether the token was active.
pub fn introspected(active: bool) {
    counter!("tether_introspections_total", "active" => if active { "true" } else { "false" }).increment(1);
}

pub fn auth_failure(reason: &'static str) {
    counter!("tether_auth_failures_total", "reason" => reason).increment(1);
}

pub fn close_sent(code: u16) {
    counter!("tether_close_codes_total", "code" => close_code_label(code)).increment(1);
}

/// A static label per contract code: a mass revocation counts 10,000 closes, and
/// formatting the code each time would allocate 10,000 strings.
fn close_code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1008 => "1008",
        1009 => "1009",
        1013 => "1013",
        4001 => "4001",
        4002 => "4002",
        4003 => "4003",
        4004 => "4004",
        4005 => "4005",
        4401 => "4401",
        _ => "other",
    }
}

/// Connections open, upgraded sockets included (what --max-connections caps).
pub fn connection_opened() {
    gauge!("tether_connections_open").increment(1.0);
}

pub fn connection_closed() {
    gauge!("tether_connections_open").decrement(1.0);
}

/// A connection reset at accept because a cap was reached (`total` or `per_ip`).
pub fn connection_refused(cap: &'static str) {
    counter!("tether_connections_refused_total", "cap" => cap).increment(1);
}

/// A connection dropped for taking too long to send its header, or for idling.
pub fn connection_timed_out(reason: &'static str) {
    counter!("tether_connections_timed_out_total", "reason" => reason).increment(1);
}

/// A login or registration turned away because the password hash queue was full.
pub fn hash_refused() {
    counter!("tether_password_hashes_refused_total").increment(1);
}

/// A socket dropped because it could not take its close frame at once.
pub fn socket_aborted() {
    counter!("tether_sockets_aborted_total").increment(1);
}

pub fn http_request(route: String, method: &str, status: u16, elapsed: Duration) {
    let labels = [("route", route), ("method", method.to_owned()), ("status", status.to_string())];
    histogram!("tether_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// One room tick: simulation, serialization and fan-out.
pub fn tick(elapsed: Duration) {
    histogram!("tether_tick_duration_seconds").record(elapsed.as_secs_f64());
}

pub fn room_started() {
    counter!("tether_rooms_started_total").increment(1);
}

pub fn room_ended() {
    counter!("tether_rooms_ended_total").increment(1);
}

/// Distinct binary frames one tick encoded (one per cell and baseline in use).
pub fn binary_frames_encoded(frames: usize) {
    counter!("tether_binary_frames_encoded_total").increment(frames as u64);
}

/// From a tick's start until one member's snapshot of it was written to its
/// connection. Tens of thousands a second at full load, so kept in fixed atomic
/// buckets rather than the exporter's histogram, which keeps every sample until
/// the next scrape.
pub fn snapshot_sent(elapsed: Duration) {
    SNAPSHOT_SEND_DELAY.record(elapsed);
}

static SNAPSHOT_SEND_DELAY: FixedHistogram = FixedHistogram::new();

/// Upper bounds in seconds: a tick is 50 ms at the default rate.
const SEND_DELAY_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0];

struct FixedHistogram {
    /// One count per bucket and one past the last, not cumulative.
    counts: [AtomicU64; SEND_DELAY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl FixedHistogram {
    const fn new() -> FixedHistogram {
        FixedHistogram {
            counts: [const { AtomicU64::new(0) }; SEND_DELAY_BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket =
            SEND_DELAY_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(SEND_DELAY_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prometheus text of a histogram named `name`.
    fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in SEND_DELAY_BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[SEND_DELAY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}
