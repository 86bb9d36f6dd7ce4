//! Rate limits: per-IP and per-username allowances for login, register and socket
//! upgrades (keyed `governor` limiters), and a token bucket for one owner's own
//! messages (a socket's frames, a player's chat lines). A limit of 0 is no limit.

use crate::config::Config;
use crate::error::ApiError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use tokio::time::Instant;

/// Usernames are keys as typed (lower-cased); a longer one cannot exist, and
/// cutting it keeps a flood of junk names from costing memory.
const USERNAME_KEY_CHARS: usize = 32;

pub struct Limits {
    auth_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    auth_per_username: Option<DefaultKeyedRateLimiter<String>>,
    upgrades_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        Limits {
            auth_per_ip: per_minute(config.auth_per_ip_per_minute),
            auth_per_username: per_minute(config.auth_per_username_per_minute),
            upgrades_per_ip: per_minute(config.upgrades_per_ip_per_minute),
        }
    }

    /// Login and register: first the caller's IP, then the username, so that
    /// guessing one account's password from many addresses is slowed too. An
    /// unknown username is limited exactly like a known one.
    pub fn auth(&self, ip: IpAddr, username: &str) -> Result<(), ApiError> {
        check(&self.auth_per_ip, &ip)?;
        let key: String = username.chars().take(USERNAME_KEY_CHARS).flat_map(char::to_lowercase).collect();
        check(&self.auth_per_username, &key)
    }

    pub fn upgrade(&self, ip: IpAddr) -> Result<(), ApiError> {
        check(&self.upgrades_per_ip, &ip)
    }

    /// Drops the state of keys that are back to a full allowance.
    pub fn forget_idle(&self) {
        fn tidy<K: Hash + Eq + Clone>(limiter: &Option<DefaultKeyedRateLimiter<K>>) {
            if let Some(limiter) = limiter {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        tidy(&self.auth_per_ip);
        tidy(&self.auth_per_username);
        tidy(&self.upgrades_per_ip);
    }
}

fn per_minute<K: Hash + Eq + Clone>(count: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(count).map(|count| RateLimiter::keyed(Quota::per_minute(count)))
}

fn check<K: Hash + Eq + Clone>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Result<(), ApiError> {
    let Some(limiter) = limiter else { return Ok(()) };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited { retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64 }
    })
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
        let limiter = per_minute::<IpAddr>(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(check(&limiter, &a).is_ok() && check(&limiter, &a).is_ok());
        let Err(ApiError::RateLimited { retry_after_secs }) = check(&limiter, &a) else {
            panic!("not limited")
        };
        assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}");
        assert!(check(&limiter, &b).is_ok());
        assert!(check(&per_minute::<IpAddr>(0), &a).is_ok(), "0 is no limit");
    }
}
