//! Rate limits, each keyed by client address ([`crate::client_ip`]) and 0 for off:
//!
//! - failed logins per (address, username) and per address across usernames, with an
//!   optional ceiling per username across addresses; a right password is never
//!   counted, and it clears its own pair;
//! - registrations, refreshes and socket upgrades per address (and, with the same
//!   keyed buckets, room creations per user: [`crate::game::Rooms`]);
//! - and a token bucket for one owner's own messages (a socket's frames, a player's
//!   chat lines).

use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::error::ApiError;
use dashmap::DashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Usernames are keys as typed (lower-cased); a longer one cannot exist, and
/// cutting it keeps a flood of junk names from costing memory.
const USERNAME_KEY_CHARS: usize = 32;

pub struct Limits {
    proxies: TrustedProxies,
    /// `--auth-per-username-per-minute`: failures per (address, username).
    login_failures_per_pair: Option<Buckets<(IpAddr, String)>>,
    /// `--auth-per-ip-per-minute`: failures per address, whatever the username.
    login_failures_per_ip: Option<Buckets<IpAddr>>,
    /// `--login-failures-per-username-per-hour`: across every address (off by default).
    login_failures_per_username: Option<Buckets<String>>,
    registrations_per_ip: Option<Buckets<IpAddr>>,
    refreshes_per_ip: Option<Buckets<IpAddr>>,
    upgrades_per_ip: Option<Buckets<IpAddr>>,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        let minute = Duration::from_secs(60);
        Limits {
            proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            login_failures_per_pair: Buckets::new(config.auth_per_username_per_minute, minute),
            login_failures_per_ip: Buckets::new(config.auth_per_ip_per_minute, minute),
            login_failures_per_username: Buckets::new(
                config.login_failures_per_username_per_hour,
                Duration::from_secs(3600),
            ),
            registrations_per_ip: Buckets::new(config.registrations_per_ip_per_minute, minute),
            refreshes_per_ip: Buckets::new(config.refreshes_per_ip_per_minute, minute),
            upgrades_per_ip: Buckets::new(config.upgrades_per_ip_per_minute, minute),
        }
    }

    pub fn proxies(&self) -> &TrustedProxies {
        &self.proxies
    }

    /// Before a login's password is checked: refused (429) while this address, this
    /// (address, username) pair or this username has no failure left to spend. Only
    /// looks; the attempt spends a failure if it turns out to be one. An unknown
    /// username is limited exactly like a known one.
    pub fn login(&self, client: IpAddr, username: &str) -> Result<LoginAttempt<'_>, ApiError> {
        let username: String =
            username.chars().take(USERNAME_KEY_CHARS).flat_map(char::to_lowercase).collect();
        let pair = (client, username);
        let waits = [
            peek(&self.login_failures_per_ip, &pair.0),
            peek(&self.login_failures_per_pair, &pair),
            peek(&self.login_failures_per_username, &pair.1),
        ];
        match waits.into_iter().flatten().max() {
            Some(wait) => Err(rate_limited(wait)),
            None => Ok(LoginAttempt { limits: self, pair }),
        }
    }

    pub fn register(&self, client: IpAddr) -> Result<(), ApiError> {
        take(&self.registrations_per_ip, &client)
    }

    pub fn refresh(&self, client: IpAddr) -> Result<(), ApiError> {
        take(&self.refreshes_per_ip, &client)
    }

    pub fn upgrade(&self, client: IpAddr) -> Result<(), ApiError> {
        take(&self.upgrades_per_ip, &client)
    }

    /// Drops the state of keys that are back to a full allowance.
    pub fn forget_idle(&self) {
        fn tidy<K: Hash + Eq>(buckets: &Option<Buckets<K>>) {
            if let Some(buckets) = buckets {
                buckets.forget_full();
            }
        }
        tidy(&self.login_failures_per_pair);
        tidy(&self.login_failures_per_ip);
        tidy(&self.login_failures_per_username);
        tidy(&self.registrations_per_ip);
        tidy(&self.refreshes_per_ip);
        tidy(&self.upgrades_per_ip);
    }
}

/// A login that passed the limits; say how its password check ended.
pub struct LoginAttempt<'a> {
    limits: &'a Limits,
    pair: (IpAddr, String),
}

impl LoginAttempt<'_> {
    /// A wrong password (or no such user): one failure for each key. Attempts that
    /// were in flight together may overdraw a bucket; the debt is waited out.
    pub fn failed(self) {
        let limits = self.limits;
        spend(&limits.login_failures_per_ip, self.pair.0);
        spend(&limits.login_failures_per_username, self.pair.1.clone());
        spend(&limits.login_failures_per_pair, self.pair);
    }

    /// The right password: this pair starts over (the address's and the username's
    /// failures stand, so that one success cannot launder another name's guesses).
    pub fn succeeded(self) {
        if let Some(buckets) = &self.limits.login_failures_per_pair {
            buckets.map.remove(&self.pair);
        }
    }
}

/// Keyed token buckets: `burst` tokens, refilled at `burst` per `period`.
pub(crate) struct Buckets<K> {
    map: DashMap<K, Bucket>,
    burst: f64,
    per_second: f64,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq> Buckets<K> {
    /// None when `burst` is 0: the limit is off.
    pub(crate) fn new(burst: u32, period: Duration) -> Option<Buckets<K>> {
        (burst > 0).then(|| Buckets {
            map: DashMap::new(),
            burst: f64::from(burst),
            per_second: f64::from(burst) / period.as_secs_f64(),
        })
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        Bucket { tokens: (bucket.tokens + earned).min(self.burst), at: now }
    }

    /// How long until one token is there (zero: now).
    fn wait_for_one(&self, bucket: Bucket) -> Duration {
        Duration::from_secs_f64(((1.0 - bucket.tokens) / self.per_second).max(0.0))
    }

    pub(crate) fn forget_full(&self) {
        let now = Instant::now();
        self.map.retain(|_, bucket| self.refilled(*bucket, now).tokens < self.burst);
        self.map.shrink_to_fit();
    }
}

/// The wait before `key` may spend a token, if it may not now.
fn peek<K: Hash + Eq>(buckets: &Option<Buckets<K>>, key: &K) -> Option<Duration> {
    let buckets = buckets.as_ref()?;
    let bucket = buckets.refilled(*buckets.map.get(key)?, Instant::now());
    (bucket.tokens < 1.0).then(|| buckets.wait_for_one(bucket))
}

/// Spends a token even if there is none: a debt, at most one burst deep.
fn spend<K: Hash + Eq>(buckets: &Option<Buckets<K>>, key: K) {
    let Some(buckets) = buckets else { return };
    let now = Instant::now();
    let mut entry = buckets.map.entry(key).or_insert(Bucket { tokens: buckets.burst, at: now });
    let bucket = buckets.refilled(*entry, now);
    *entry = Bucket { tokens: (bucket.tokens - 1.0).max(-buckets.burst), at: now };
}

/// Spends a token, or answers 429 with when to retry.
pub(crate) fn take<K: Hash + Eq + Clone>(buckets: &Option<Buckets<K>>, key: &K) -> Result<(), ApiError> {
    let Some(buckets) = buckets else { return Ok(()) };
    let now = Instant::now();
    let mut entry = buckets.map.entry(key.clone()).or_insert(Bucket { tokens: buckets.burst, at: now });
    let bucket = buckets.refilled(*entry, now);
    if bucket.tokens >= 1.0 {
        *entry = Bucket { tokens: bucket.tokens - 1.0, at: now };
        Ok(())
    } else {
        *entry = bucket;
        Err(rate_limited(buckets.wait_for_one(bucket)))
    }
}

fn rate_limited(wait: Duration) -> ApiError {
    ApiError::RateLimited { retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64 }
}

/// A token bucket: `burst` at once, refilled at `per_second`.
pub struct TokenBucket {
    tokens: f32,
    refilled_at: Instant,
    burst: f32,
    per_second: f32,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: f32) -> TokenBucket {
        TokenBucket { tokens: burst as f32, refilled_at: Instant::now(), burst: burst as f32, per_second }
    }

    /// Takes one token; false when none is left.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled_at).as_secs_f32() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses() {
        let mut bucket = TokenBucket::new(3, 0.001);
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take());
    }

    #[test]
    fn keyed_limits_count_each_key_apart_and_say_when_to_retry() {
        let buckets = Buckets::<IpAddr>::new(2, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(take(&buckets, &a).is_ok() && take(&buckets, &a).is_ok());
        let Err(ApiError::RateLimited { retry_after_secs }) = take(&buckets, &a) else {
            panic!("not limited")
        };
        assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}");
        assert!(take(&buckets, &b).is_ok());
        assert!(take(&Buckets::<IpAddr>::new(0, Duration::from_secs(60)), &a).is_ok(), "0 is no limit");
    }

    fn limits(per_pair: u32, per_ip: u32) -> Limits {
        let mut config = Config::defaults();
        config.auth_per_username_per_minute = per_pair;
        config.auth_per_ip_per_minute = per_ip;
        Limits::new(&config)
    }

    #[test]
    fn only_failed_logins_count_and_a_success_clears_its_pair() {
        let limits = limits(2, 0);
        let (attacker, victim): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        for _ in 0..50 {
            limits.login(victim, "Alice").unwrap().succeeded();
        }
        limits.login(victim, "alice").unwrap().failed();
        limits.login(victim, "alice").unwrap().succeeded();
        limits.login(victim, "alice").unwrap().failed();
        limits.login(attacker, "alice").unwrap().failed();
        limits.login(attacker, "alice").unwrap().failed();
        assert!(limits.login(attacker, "ALICE").is_err(), "the attacker's pair is spent");
        assert!(limits.login(victim, "alice").is_ok(), "the victim's is not");
        assert!(limits.login(attacker, "bob").is_ok(), "nor the attacker's for another name");
    }

    #[test]
    fn an_address_has_failures_to_spend_across_usernames() {
        let limits = limits(0, 3);
        let attacker: IpAddr = "10.0.0.2".parse().unwrap();
        for name in ["a", "b", "c"] {
            limits.login(attacker, name).unwrap().failed();
        }
        assert!(limits.login(attacker, "d").is_err());
        assert!(limits.login("10.0.0.3".parse().unwrap(), "d").is_ok());
    }

    #[test]
    fn the_optional_username_ceiling_counts_failures_from_every_address() {
        let mut config = Config::defaults();
        config.login_failures_per_username_per_hour = 2;
        let limits = Limits::new(&config);
        limits.login("10.0.0.1".parse().unwrap(), "alice").unwrap().failed();
        limits.login("10.0.0.2".parse().unwrap(), "alice").unwrap().failed();
        let Err(ApiError::RateLimited { retry_after_secs }) =
            limits.login("10.0.0.3".parse().unwrap(), "alice")
        else {
            panic!("the ceiling holds for a third address, the owner's too")
        };
        assert!(retry_after_secs > 60, "a per-hour refill: {retry_after_secs}");
        assert!(limits.login("10.0.0.3".parse().unwrap(), "bob").is_ok());
    }
}
