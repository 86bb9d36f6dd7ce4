//! Credentials of the game's other services (a shop, a chat): made by `tether service
//! create`, stored as SHA-256 hashes, and held in memory so that checking one on an
//! introspection call costs a hash, never a database read. Every node rereads the
//! table every [`RELOAD_EVERY`], which bounds how long a revoked credential works.

use crate::app::AppState;
use crate::store::{self, ServiceRecord};
use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// The contract gives a revoked credential at most 5 s on any node.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
const CLIENT_ID_PREFIX: &str = "svc_";

/// The live credentials, by client id.
pub struct ServiceCredentials {
    live: ArcSwap<HashMap<String, Credential>>,
    /// Bumped whenever a credential stops being live, so that its streams end.
    revoked: tokio::sync::watch::Sender<u64>,
}

#[derive(Clone, PartialEq, Eq)]
struct Credential {
    name: Arc<str>,
    secret_hash: [u8; 32],
}

/// Who called, once the credential checked out.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub client_id: String,
    pub name: Arc<str>,
}

impl Default for ServiceCredentials {
    fn default() -> ServiceCredentials {
        ServiceCredentials { live: ArcSwap::default(), revoked: tokio::sync::watch::channel(0).0 }
    }
}

impl ServiceCredentials {
    /// Takes the table as read; returns how many credentials are live.
    pub fn replace(&self, records: Vec<ServiceRecord>) -> usize {
        let next: HashMap<String, Credential> = records
            .into_iter()
            .filter(|record| record.revoked_at.is_none())
            .filter_map(|record| {
                let secret_hash = record.secret_hash.as_slice().try_into().ok()?;
                Some((record.client_id, Credential { name: record.name.into(), secret_hash }))
            })
            .collect();
        let previous = self.live.load();
        let lost_any = previous.iter().any(|(id, credential)| next.get(id) != Some(credential));
        let live = next.len();
        self.live.store(Arc::new(next));
        if lost_any {
            self.revoked.send_modify(|generation| *generation += 1);
        }
        live
    }

    /// The caller if `secret` is the live secret of `client_id`. The hashes are
    /// compared in constant time, and an unknown id costs the same hash and compare,
    /// so timing tells nothing about either.
    pub fn check(&self, client_id: &str, secret: &str) -> Option<ServiceCaller> {
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let live = self.live.load();
        let credential = live.get(client_id);
        let expected = credential.map_or([0u8; 32], |credential| credential.secret_hash);
        let matches: bool = presented.ct_eq(&expected).into();
        let credential = credential.filter(|_| matches)?;
        Some(ServiceCaller { client_id: client_id.to_owned(), name: credential.name.clone() })
    }

    pub fn is_live(&self, client_id: &str) -> bool {
        self.live.load().contains_key(client_id)
    }

    /// Changes whenever some credential stops being live.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revoked.subscribe()
    }
}

/// A new credential for `name`, and its secret, which only this moment sees.
pub fn new_credential(name: &str) -> anyhow::Result<(ServiceRecord, String)> {
    anyhow::ensure!(
        (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "a service name has 1-64 characters of A-Z a-z 0-9 _ -"
    );
    let mut id = [0u8; 12];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    // base64url without padding: only A-Z a-z 0-9 _ -, so Basic needs no escaping.
    let client_secret = URL_SAFE_NO_PAD.encode(secret);
    let record = ServiceRecord {
        name: name.to_owned(),
        client_id: format!("{CLIENT_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(id)),
        secret_hash: Sha256::digest(client_secret.as_bytes()).to_vec(),
        created_at: store::now(),
        revoked_at: None,
    };
    Ok((record, client_secret))
}

/// Loads the credentials once, before the server listens.
pub async fn load(state: &AppState) -> anyhow::Result<()> {
    let live = state.services.replace(state.store.services().await?);
    tracing::info!(services = live, "service credentials loaded");
    Ok(())
}

/// Rereads the credentials until shutdown; a failed read keeps the ones in force.
pub async fn follow(state: AppState) {
    let mut every = tokio::time::interval(RELOAD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = every.tick() => match state.store.services().await {
                Ok(records) => {
                    state.services.replace(records);
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot reread the service credentials");
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_live_secret_of_the_id_passes() {
        let credentials = ServiceCredentials::default();
        let (shop, shop_secret) = new_credential("shop").unwrap();
        let (chat, chat_secret) = new_credential("chat").unwrap();
        credentials.replace(vec![shop.clone(), chat.clone()]);
        assert_eq!(&*credentials.check(&shop.client_id, &shop_secret).unwrap().name, "shop");
        assert!(credentials.check(&shop.client_id, &chat_secret).is_none(), "another service's secret");
        assert!(credentials.check("svc_unknown", &shop_secret).is_none());
        assert!(credentials.check(&shop.client_id, "").is_none());

        let revocations = credentials.revocations();
        let revoked = ServiceRecord { revoked_at: Some(store::now()), ..shop.clone() };
        credentials.replace(vec![revoked, chat.clone()]);
        assert!(credentials.check(&shop.client_id, &shop_secret).is_none(), "a revoked credential");
        assert!(revocations.has_changed().unwrap(), "its streams are told");
        assert!(credentials.check(&chat.client_id, &chat_secret).is_some());
    }

    #[test]
    fn ids_and_secrets_need_no_escaping_and_names_are_checked() {
        let (record, secret) = new_credential("leader-board_2").unwrap();
        let plain = |text: &str| text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        assert!(plain(&record.client_id) && plain(&secret));
        assert!(secret.len() >= 43, "at least 256 bits");
        for bad in ["", "a b", "shop:1", &"x".repeat(65)] {
            assert!(new_credential(bad).is_err(), "{bad:?}");
        }
    }
}
