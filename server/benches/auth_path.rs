//! The per-request hot path: the access token's signature and claims, then the
//! registry's answer for its session, alone and together (what the `AuthSession`
//! extractor and the upgrade handler pay before any handler runs).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tether::auth::jwt::TokenKeys;
use tether::auth::keyset::{self, KeyAlgorithm, KeySet};
use tether::sessions::SessionRegistry;
use tether::store::SessionRecord;
use tether_shared::api::Role;
use tether_shared::{SessionId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

/// Sessions in the registry: a busy node's worth.
const SESSIONS: usize = 10_000;

fn live_record(now: OffsetDateTime) -> SessionRecord {
    SessionRecord::new_live(Uuid::new_v4(), now, Duration::from_secs(30 * 24 * 3600), None, None)
}

fn auth_path(c: &mut Criterion) {
    let set = KeySet::from_secret(&[7u8; 32]).expect("a 32-byte secret");
    let keys =
        TokenKeys::new(&set, "tether", "tether", Duration::from_secs(900), 30).expect("a crypto backend");
    let ed_set = KeySet { keys: vec![keyset::generate(KeyAlgorithm::EdDsa, Some("ed".into()))], active: 0 };
    let eddsa =
        TokenKeys::new(&ed_set, "tether", "tether", Duration::from_secs(900), 30).expect("an Ed25519 key");
    let now = tether::store::now();
    let registry = SessionRegistry::default();
    let records: Vec<SessionRecord> = (0..SESSIONS).map(|_| live_record(now)).collect();
    for record in &records {
        registry.remember(record);
    }
    let mine = &records[SESSIONS / 2];
    let sid = SessionId(mine.id);
    let token = keys
        .issue(UserId(mine.user_id), sid, Role::Player, "alice", now.unix_timestamp())
        .expect("issuing a token");

    let mut group = c.benchmark_group("auth_path");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("verify", |b| b.iter(|| keys.verify(black_box(&token)).expect("a valid token")));
    let ed_token = eddsa
        .issue(UserId(mine.user_id), sid, Role::Player, "alice", now.unix_timestamp())
        .expect("issuing an EdDSA token");
    // EdDSA costs a curve operation per verify where HS256 costs two hashes; a token
    // already verified by this key set is found by its hash instead. The first use
    // starts from an empty cache each time.
    group.bench_function("verify_eddsa_first_use", |b| {
        b.iter_batched(
            || {
                TokenKeys::new(&ed_set, "tether", "tether", Duration::from_secs(900), 30)
                    .expect("an Ed25519 key")
            },
            |fresh| fresh.verify(black_box(&ed_token)).expect("a valid token"),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("verify_eddsa_again", |b| {
        b.iter(|| eddsa.verify(black_box(&ed_token)).expect("a valid token"))
    });
    group.bench_function("check_10k_sessions", |b| {
        b.iter(|| registry.check(black_box(sid), now).is_ok_and(|entry| entry.id == sid))
    });
    // As the extractor does it: the clock read per request, the token's user matched.
    group.bench_function("verify_and_check", |b| {
        b.iter(|| {
            let claims = keys.verify(black_box(&token)).expect("a valid token");
            registry.check(claims.sid, tether::store::now()).is_ok_and(|entry| entry.user_id == claims.sub)
        })
    });
    group.finish();
}

criterion_group!(benches, auth_path);
criterion_main!(benches);
