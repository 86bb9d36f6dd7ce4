//! Argon2id password hashing, off the async runtime, at a bounded concurrency with a
//! bounded queue: beyond the queue a login or registration is turned away (503
//! `busy`) rather than left to pile up. A hash that has started holds its turn until
//! it ends, even if its client has left: the turn moves into the blocking task.

use crate::error::ApiError;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a turned-away client is told to wait.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

#[derive(Clone)]
pub struct Passwords {
    argon: Arc<Argon2<'static>>,
    /// One hash per core at a time: each takes the configured memory (19 MiB by
    /// default), so a burst of logins must queue rather than multiply it.
    running: Arc<Semaphore>,
    cores: usize,
    gauges: Arc<Gauges>,
    /// Hashes that may wait for a core (None: no bound).
    max_waiting: Option<usize>,
    /// Verified against when the user does not exist, so that a wrong username costs
    /// as much time as a wrong password and timing does not reveal which it was.
    decoy_hash: Arc<str>,
}

#[derive(Default)]
struct Gauges {
    /// Admitted: waiting for a core or running.
    admitted: AtomicUsize,
    running: AtomicUsize,
    /// The most that ever ran at once (what the bound promises to keep <= cores).
    peak: AtomicUsize,
}

/// A place in the queue or on a core; given back on drop.
struct Admitted(Arc<Gauges>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A hash on a core: the semaphore permit and the gauges, released when it ends.
struct Running {
    _permit: OwnedSemaphorePermit,
    _admitted: Admitted,
    gauges: Arc<Gauges>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.gauges.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Passwords {
    /// No bound on the queue: for the command line, which hashes one at a time.
    pub fn new(memory_kib: u32, iterations: u32) -> anyhow::Result<Passwords> {
        Passwords::with_queue(memory_kib, iterations, 0)
    }

    /// `queue`: hashes that may wait for a core beyond those running (0: no bound).
    pub fn with_queue(memory_kib: u32, iterations: u32, queue: usize) -> anyhow::Result<Passwords> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy_hash = hash_with(&argon, "decoy password that no one has")?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Passwords {
            argon: Arc::new(argon),
            running: Arc::new(Semaphore::new(cores)),
            cores,
            gauges: Arc::default(),
            max_waiting: (queue > 0).then_some(queue),
            decoy_hash: decoy_hash.into(),
        })
    }

    /// Hashes that may run at once.
    pub fn concurrency(&self) -> usize {
        self.cores
    }

    /// Hashes running now.
    pub fn running(&self) -> usize {
        self.gauges.running.load(Ordering::Acquire)
    }

    /// The most hashes that ever ran at once.
    pub fn peak(&self) -> usize {
        self.gauges.peak.load(Ordering::Acquire)
    }

    /// Hashes waiting for a core now.
    pub fn waiting(&self) -> usize {
        self.gauges.admitted.load(Ordering::Acquire).saturating_sub(self.running())
    }

    /// Waits for a core, or answers `busy` at once when the queue is full.
    async fn turn(&self) -> Result<Running, ApiError> {
        let admitted = self.gauges.admitted.fetch_add(1, Ordering::AcqRel);
        let place = Admitted(self.gauges.clone());
        if let Some(max_waiting) = self.max_waiting
            && admitted >= self.cores + max_waiting
        {
            crate::telemetry::metrics::hash_refused();
            return Err(ApiError::Busy { retry_after_secs: BUSY_RETRY_AFTER_SECS });
        }
        let permit = self.running.clone().acquire_owned().await.map_err(anyhow::Error::from)?;
        let now = self.gauges.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.gauges.peak.fetch_max(now, Ordering::AcqRel);
        Ok(Running { _permit: permit, _admitted: place, gauges: self.gauges.clone() })
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let turn = self.turn().await?;
        let argon = self.argon.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            hash_with(&argon, &password)
        })
        .await
        .map_err(anyhow::Error::from)??;
        Ok(hashed)
    }

    /// Whether `password` matches `stored`; with no stored hash it still spends the
    /// time. `busy` when the queue is full.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let argon = self.argon.clone();
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy_hash.to_string());
        let turn = self.turn().await?;
        let matched = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            PasswordHash::new(&stored)
                .map(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        Ok(exists && matched)
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> anyhow::Result<String> {
    argon
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(8, 1).unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(passwords.verify("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!passwords.verify("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(!passwords.verify("decoy password that no one has".into(), None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_cores_and_the_queue_a_hash_is_busy_and_a_turn_is_held_until_dropped() {
        let passwords = Passwords::with_queue(8, 1, 1).unwrap();
        let mut held = Vec::new();
        for _ in 0..passwords.concurrency() {
            held.push(passwords.turn().await.unwrap());
        }
        assert_eq!(passwords.running(), passwords.concurrency());
        let queued = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.turn().await.map(drop) }
        });
        let queued_up = async {
            while passwords.waiting() == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), queued_up).await.expect("the turn queues");
        assert!(matches!(passwords.turn().await, Err(ApiError::Busy { retry_after_secs: 1 })));
        held.pop();
        queued.await.unwrap().unwrap();
        drop(held);
        assert_eq!((passwords.running(), passwords.waiting()), (0, 0));
        assert_eq!(passwords.peak(), passwords.concurrency());
    }
}
