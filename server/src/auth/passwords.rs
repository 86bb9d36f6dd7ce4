//! Argon2id password hashing, off the async runtime.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Passwords {
    argon: Arc<Argon2<'static>>,
    /// One hash per core at a time: each takes the configured memory (19 MiB by
    /// default), so a burst of logins must queue rather than multiply it.
    running: Arc<Semaphore>,
    /// Verified against when the user does not exist, so that a wrong username costs
    /// as much time as a wrong password and timing does not reveal which it was.
    decoy_hash: Arc<str>,
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32) -> anyhow::Result<Passwords> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy_hash = hash_with(&argon, "decoy password that no one has")?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Passwords {
            argon: Arc::new(argon),
            running: Arc::new(Semaphore::new(cores)),
            decoy_hash: decoy_hash.into(),
        })
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _turn = self.running.acquire().await?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || hash_with(&argon, &password)).await?
    }

    /// Whether `password` matches `stored`; with no stored hash it still spends the time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let argon = self.argon.clone();
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy_hash.to_string());
        let Ok(_turn) = self.running.acquire().await else { return false };
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        exists && matched
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
        assert!(passwords.verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!passwords.verify("wrong horse".into(), Some(hash)).await);
        assert!(!passwords.verify("decoy password that no one has".into(), None).await);
    }
}
