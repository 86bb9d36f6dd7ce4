//! Revocation fan-out: mark the sessions, collect their sockets' close handles, hand
//! each socket its close order and wait until every socket task has confirmed it
//! (what an admin revoke or "revoke all" waits for before answering).
//!
//! Each measured iteration gets a fresh registry of 10,000 attached sockets, each with
//! a task parked on its close receiver; building those is not timed. The timed part
//! runs as a task on a 2-worker runtime, like a handler would.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tether::revocation::{Revocation, RevokeKind};
use tether::sessions::SessionRegistry;
use tether::store::SessionRecord;
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use uuid::Uuid;

const SOCKETS: usize = 10_000;

fn live_record(now: OffsetDateTime) -> SessionRecord {
    SessionRecord::new_live(Uuid::new_v4(), now, Duration::from_secs(30 * 24 * 3600), None, None)
}

fn revoked(record: &SessionRecord, now: OffsetDateTime) -> SessionRecord {
    SessionRecord { revoked_at: Some(now), revoke_kind: Some("admin_revoke".into()), ..record.clone() }
}

/// A registry whose `sessions` sessions hold `SOCKETS` sockets between them, each
/// socket with a task parked on its close order; returns the revoked records to pass.
struct Setup {
    registry: SessionRegistry,
    revoked: Vec<SessionRecord>,
    tasks: Vec<JoinHandle<()>>,
}

async fn set_up(sessions: usize) -> Setup {
    let now = tether::store::now();
    let registry = SessionRegistry::default();
    let records: Vec<SessionRecord> = (0..sessions).map(|_| live_record(now)).collect();
    let entries: Vec<_> = records.iter().map(|record| registry.remember(record)).collect();
    let parked = Arc::new(AtomicUsize::new(0));
    let tasks = (0..SOCKETS)
        .map(|n| {
            let (guard, close) =
                registry.attach_socket(&entries[n % sessions], now).expect("a live session takes sockets");
            let parked = parked.clone();
            tokio::spawn(async move {
                parked.fetch_add(1, Ordering::Relaxed);
                // A socket task writes the close frame, then drops the order (its
                // ticket), and ends, which unregisters the socket.
                if let Ok(order) = close.await {
                    drop(order);
                }
                drop(guard);
            })
        })
        .collect();
    // Every task waits on its receiver before the clock starts.
    while parked.load(Ordering::Relaxed) < SOCKETS {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let revoked = records.iter().map(|record| revoked(record, now)).collect();
    Setup { registry, revoked, tasks }
}

fn fan_out(runtime: &Runtime, sessions: usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let Setup { registry, revoked, tasks } = runtime.block_on(set_up(sessions));
        let timed = runtime.spawn(async move {
            let started = Instant::now();
            let revocation = Arc::new(Revocation::new(RevokeKind::AdminRevoke, None, tether::store::now()));
            let plan = registry.revoke(&revoked, &revocation);
            let closed = plan.execute(Duration::from_secs(5)).await;
            (started.elapsed(), closed, registry, revoked)
        });
        let (elapsed, closed, registry, revoked) = runtime.block_on(timed).expect("the revoking task");
        assert_eq!(closed, SOCKETS as u64, "every socket got its close order");
        assert!(elapsed < Duration::from_secs(5), "socket tasks confirmed in time");
        total += elapsed;
        // Let the socket tasks end and the registry go before the next iteration.
        runtime.block_on(async {
            for task in tasks {
                task.await.expect("a socket task");
            }
        });
        drop((registry, revoked));
    }
    total
}

fn revocation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("revocation_10k_sockets");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (label, sessions) in [("1_session", 1), ("10k_sessions", SOCKETS)] {
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| fan_out(&runtime, sessions, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, revocation);
criterion_main!(benches);
