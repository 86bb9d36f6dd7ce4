//! The scenarios, and what they share: the run's context, pacing, and opening many
//! sockets at a rate with a bound on handshakes in flight.

mod connect;
mod feed;
mod hostile;
mod http;
mod play;
mod revoke;

use crate::api::Api;
use crate::cli::{Cli, Common, Scenario};
use crate::stats::{Failures, HINTS, SharedHist};
use crate::target::Target;
use crate::{plot, stats};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a socket closing from our side waits for the server's reply.
pub const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// What every scenario gets.
pub struct Ctx<'a> {
    pub common: &'a Common,
    pub target: Arc<Target>,
    pub api: Arc<Api>,
    /// Failures of the whole run, by kind.
    pub failures: Failures,
    /// Time from sending a login to its answer (successful ones).
    pub login_latency: SharedHist,
}

/// Runs the chosen scenario within `--max-time`, then prints (and writes) the report.
pub async fn run(cli: Cli, open_files: u64) -> anyhow::Result<()> {
    let common = cli.scenario.common();
    let target = Arc::new(Target::parse(&common.target, &common.source_ips)?);
    let api = Arc::new(Api::new(target.clone())?);
    let ctx =
        Ctx { common, target, api, failures: Failures::default(), login_latency: SharedHist::default() };
    if !common.source_ips.is_empty() {
        let sources: Vec<String> = common.source_ips.iter().map(ToString::to_string).collect();
        eprintln!("source addresses, in turn: {}", sources.join(", "));
    }
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let overflows_before = stats::listen_overflows();
    let (cpu_before, wall_started) = (stats::own_cpu_time(), Instant::now());
    let scenario = async {
        match &cli.scenario {
            Scenario::Connect(args) => connect::run(&ctx, args, open_files).await,
            Scenario::Play(args) => play::run(&ctx, args, open_files).await,
            Scenario::Revoke(args) => revoke::run(&ctx, args, open_files).await,
            Scenario::Http(args) => http::run(&ctx, args).await,
            Scenario::Hostile(args) => hostile::run(&ctx, args).await,
            Scenario::Feed(args) => feed::run(&ctx, args).await,
        }
    };
    let mut report = match tokio::time::timeout(common.max_time, scenario).await {
        Ok(report) => report?,
        Err(_) => {
            for hint in HINTS.lines() {
                eprintln!("hint: {hint}");
            }
            anyhow::bail!(
                "gave up: the run took longer than --max-time ({} s); failures so far: {:?}",
                common.max_time.as_secs_f64(),
                ctx.failures.snapshot()
            );
        }
    };
    if let (Some(before), Some(after)) = (overflows_before, stats::listen_overflows()) {
        report.figure("listen queue overflows (machine-wide)", after.saturating_sub(before) as f64, "");
        if after > before {
            report.hints.push(format!(
                "{} connections found the server's accept queue full (TcpExtListenOverflows) and were \
                 retried a second later: the server's listen backlog is too small for this burst, \
                 or lower --concurrency",
                after - before
            ));
        }
    }
    if let (Some(before), Some(after)) = (cpu_before, stats::own_cpu_time()) {
        let cores = (after.saturating_sub(before)).as_secs_f64() / wall_started.elapsed().as_secs_f64();
        report.figure("loadgen CPU (cores busy, whole run)", cores, "");
    }
    report.target = common.target.clone();
    report.started_at = started_at;
    report.open_file_limit = open_files;
    report.failures = ctx.failures.snapshot();
    report.latency("login", ctx.login_latency.snapshot());
    report.hints.extend(stats::HINTS.lines());
    report.print();
    if let Some(path) = &common.json {
        report.write_json(path)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &common.plot {
        plot::write_svg(&report, path)?;
        eprintln!("chart written to {}", path.display());
    }
    if report.mismatch_count > 0 {
        let what = match report.scenario {
            "feed" => "revocation events did not arrive exactly once",
            _ => "sockets did not end as expected",
        };
        anyhow::bail!("{} {what}", report.mismatch_count);
    }
    Ok(())
}

/// The flags of a run as JSON, for the report.
pub fn settings(args: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(args).unwrap_or_default()
}

/// Warns when a run would need more descriptors than this process may open.
pub fn check_open_files(sockets: u32, open_files: u64) {
    // A few dozen descriptors go to the runtime, stdio and HTTP connections.
    if open_files > 0 && u64::from(sockets) + 64 > open_files {
        eprintln!(
            "warning: {sockets} sockets need more descriptors than the open-file limit {open_files} allows: \
             expect \"too many open files\" (raise `ulimit -Hn`, or split the load over several processes)"
        );
    }
}

/// Starts the i-th of many things at `start + i / rate`; a rate of 0 (or less) does not wait.
pub struct Pacer {
    start: Instant,
    interval: Option<Duration>,
}

impl Pacer {
    pub fn new(per_second: f64) -> Pacer {
        let interval =
            (per_second > 0.0 && per_second.is_finite()).then(|| Duration::from_secs_f64(1.0 / per_second));
        Pacer { start: Instant::now(), interval }
    }

    pub async fn wait(&self, i: u32) {
        if let Some(interval) = self.interval {
            tokio::time::sleep_until(self.start + interval.mul_f64(f64::from(i))).await;
        }
    }
}

/// Spawns `count` tasks paced at `rate` per second. Each gets its index and a permit
/// of `concurrency`, which it drops when its socket is open (or has failed), so that
/// at most `concurrency` handshakes are in flight. Returns once every task has
/// dropped its permit: every socket is then open or failed.
pub async fn open_paced<F, Fut, T>(count: u32, rate: f64, concurrency: u32, mut spawn: F) -> JoinSet<T>
where
    F: FnMut(u32, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency as usize));
    let pacer = Pacer::new(rate);
    let mut tasks = JoinSet::new();
    for i in 0..count {
        pacer.wait(i).await;
        let permit = gate.clone().acquire_owned().await.expect("the gate is never closed");
        tasks.spawn(spawn(i, permit));
    }
    let _all_back = gate.acquire_many(concurrency).await.expect("the gate is never closed");
    tasks
}

/// Waits for every task; a task that panicked is reported and skipped.
pub async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => eprintln!("a task failed: {error}"),
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_paced_keeps_the_rate_and_the_bound() {
        let in_flight = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let most = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let started = Instant::now();
        let tasks = open_paced(20, 100.0, 3, |i, permit| {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            async move {
                let now = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                drop(permit);
                i
            }
        })
        .await;
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 3);
        // 20 tasks of 50 ms, 3 at a time, need at least 7 rounds.
        assert!(started.elapsed() >= Duration::from_millis(350));
        let mut done = join_all(tasks).await;
        done.sort();
        assert_eq!(done, (0..20).collect::<Vec<_>>());
    }
}
