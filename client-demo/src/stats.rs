//! What a run measures: HDR histograms of latencies (kept in microseconds), failure
//! counts by kind, and the server answers that deserve a hint at the end.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Microseconds, from 1 µs to one hour, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A latency histogram shared by many tasks. Tasks that record often take a
/// [`Recorder`], which batches, so that the lock is taken once per batch; a histogram
/// per task would cost ~100 KiB each.
#[derive(Clone)]
pub struct SharedHist(Arc<Mutex<Histogram<u64>>>);

impl Default for SharedHist {
    fn default() -> Self {
        SharedHist(Arc::new(Mutex::new(new_histogram())))
    }
}

impl SharedHist {
    pub fn record(&self, latency: Duration) {
        self.0.lock().expect("histogram lock").saturating_record(micros(latency));
    }

    pub fn recorder(&self) -> Recorder {
        Recorder { shared: self.clone(), batch: Vec::with_capacity(BATCH) }
    }

    pub fn snapshot(&self) -> Histogram<u64> {
        self.0.lock().expect("histogram lock").clone()
    }
}

const BATCH: usize = 64;

/// Batches a task's samples into a [`SharedHist`]; flushes when full and on drop.
pub struct Recorder {
    shared: SharedHist,
    batch: Vec<u64>,
}

impl Recorder {
    pub fn record(&mut self, latency: Duration) {
        self.batch.push(micros(latency));
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut histogram = self.shared.0.lock().expect("histogram lock");
        for value in self.batch.drain(..) {
            histogram.saturating_record(value);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Failures counted by kind: a short, low-cardinality description such as
/// `upgrade: http 429` or `closed during hold: 1008 slow consumer`.
#[derive(Clone, Default)]
pub struct Failures(Arc<Mutex<BTreeMap<String, u64>>>);

impl Failures {
    pub fn add(&self, kind: impl Into<String>) {
        *self.0.lock().expect("failures lock").entry(kind.into()).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("failures lock").clone()
    }
}

/// Server answers that mean the server (or this machine) was set up wrongly for a
/// load test rather than slow; each gets a hint in the summary.
pub struct Hints {
    /// HTTP 429 on a login, a registration, an upgrade or an API call.
    pub rate_limited: AtomicU64,
    /// Sockets closed 1008 for sending too fast.
    pub message_rate: AtomicU64,
    /// EMFILE / ENFILE: out of file descriptors.
    pub out_of_files: AtomicU64,
    /// EADDRNOTAVAIL: out of ephemeral ports for one source address.
    pub out_of_ports: AtomicU64,
}

pub static HINTS: Hints = Hints {
    rate_limited: AtomicU64::new(0),
    message_rate: AtomicU64::new(0),
    out_of_files: AtomicU64::new(0),
    out_of_ports: AtomicU64::new(0),
};

impl Hints {
    pub fn note(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A line per problem seen, saying what to change.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        if count(&self.rate_limited) > 0 {
            lines.push(format!(
                "the server answered 429 rate_limited {} times: for load tests run it with \
                 --auth-per-ip-per-minute 0 --auth-per-username-per-minute 0 \
                 --upgrades-per-ip-per-minute 0 --ws-messages-per-second 0 \
                 --registrations-per-ip-per-minute 0 --refreshes-per-ip-per-minute 0",
                count(&self.rate_limited)
            ));
        }
        if count(&self.message_rate) > 0 {
            lines.push(format!(
                "{} sockets were closed 1008 \"message rate exceeded\": run the server with \
                 --ws-messages-per-second 0, or lower --hz",
                count(&self.message_rate)
            ));
        }
        if count(&self.out_of_files) > 0 {
            lines.push(format!(
                "{} connections failed with \"too many open files\": raise the hard limit \
                 (`ulimit -Hn`, 20000 on this machine), or open fewer sockets per process",
                count(&self.out_of_files)
            ));
        }
        if count(&self.out_of_ports) > 0 {
            lines.push(format!(
                "{} connections failed with \"address not available\" (out of ephemeral ports): \
                 add source addresses, e.g. --source-ips 127.0.0.1,127.0.0.2,127.0.0.3",
                count(&self.out_of_ports)
            ));
        }
        lines
    }
}

/// Linux errno values that mean this machine, not the server, ran out of something.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A short description of an I/O error for a failure kind, noting the ones with a hint.
pub fn describe_io(stage: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if matches!(error.raw_os_error(), Some(EMFILE | ENFILE)) {
        Hints::note(&HINTS.out_of_files);
        return format!("{stage}: too many open files");
    }
    let what = match error.kind() {
        ErrorKind::AddrNotAvailable => {
            Hints::note(&HINTS.out_of_ports);
            "address not available (out of ephemeral ports)"
        }
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::ConnectionAborted => "connection aborted",
        ErrorKind::BrokenPipe => "broken pipe",
        ErrorKind::TimedOut => "timed out",
        ErrorKind::UnexpectedEof => "unexpected end of stream",
        ErrorKind::AddrInUse => "address in use",
        _ => return format!("{stage}: {:?}", error.kind()),
    };
    format!("{stage}: {what}")
}

/// `TcpExtListenOverflows` from `/proc/net/netstat`: connections dropped because a
/// listener's accept queue was full, counted for the whole machine (network
/// namespace). A client retries a dropped SYN after a second, which shows as a ~1 s
/// step in connect latencies.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    netstat_value(&text, "TcpExt:", "ListenOverflows")
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`, so
/// that a report shows whether the load generator itself was the bottleneck.
pub fn own_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_time_from_stat(&stat)
}

fn cpu_time_from_stat(stat: &str) -> Option<Duration> {
    // Fields after the command name (which may hold spaces, hence the last ')'):
    // state is field 3, utime field 14, stime field 15, in clock ticks.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis((user + system) * 10))
}

/// A value from the `/proc/net/netstat` layout: a header line of names and a line of
/// values, both starting with the same prefix.
fn netstat_value(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|line| line.starts_with(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|field| field == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_the_command_name() {
        let stat = "42 (load gen) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_time_from_stat(stat), Some(Duration::from_secs(3)));
    }

    #[test]
    fn netstat_values_are_found_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 71 72\n\
                    IpExt: InNoRoutes\nIpExt: 5\n";
        assert_eq!(netstat_value(text, "TcpExt:", "ListenOverflows"), Some(71));
        assert_eq!(netstat_value(text, "IpExt:", "InNoRoutes"), Some(5));
        assert_eq!(netstat_value(text, "TcpExt:", "Nope"), None);
    }

    #[test]
    fn recorders_flush_into_the_shared_histogram() {
        let shared = SharedHist::default();
        {
            let mut recorder = shared.recorder();
            for ms in 1..=100 {
                recorder.record(Duration::from_millis(ms));
            }
        }
        shared.record(Duration::from_nanos(10));
        let histogram = shared.snapshot();
        assert_eq!(histogram.len(), 101);
        assert_eq!(histogram.min(), 1, "sub-microsecond samples count as 1 µs");
        assert!(histogram.value_at_quantile(0.5).abs_diff(50_000) < 100);
    }
}
