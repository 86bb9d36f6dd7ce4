//! Keeps the keys in force in step with `--jwt-keys-file`: the file is reread on
//! SIGHUP and whenever its contents change. A reread that does not parse or validate
//! is logged and ignored; the keys in force stay, so a half-written file never logs
//! anyone out.

use crate::app::AppState;
use crate::auth::jwt::TokenKeys;
use crate::auth::keyset::KeySet;
use std::path::PathBuf;
use std::time::Duration;

/// How often the file is looked at; the contract allows 5 s from a change to its use.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What a `serve` watches: the key file (if any) and the hang-up signal, taken at
/// start so that a SIGHUP sent as soon as the server listens never stops it.
pub struct KeyFileWatch {
    path: Option<PathBuf>,
    /// The contents last read, so that an unchanged file is not parsed again and a
    /// bad one is reported once, not every second.
    last: Vec<u8>,
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
}

impl KeyFileWatch {
    /// Must be called from within the runtime.
    pub fn start(path: Option<PathBuf>) -> KeyFileWatch {
        let last = path.as_ref().and_then(|path| std::fs::read(path).ok()).unwrap_or_default();
        #[cfg(unix)]
        let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP");
                None
            }
        };
        KeyFileWatch {
            path,
            last,
            #[cfg(unix)]
            hangups,
        }
    }

    /// Until shutdown: rereads on SIGHUP and on change.
    pub async fn run(mut self, state: AppState) {
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = self.hangup() => {
                    match &self.path {
                        Some(_) => self.reread(&state, true),
                        None => tracing::info!("SIGHUP: no --jwt-keys-file to reread"),
                    }
                }
                _ = poll.tick(), if self.path.is_some() => self.reread(&state, false),
            }
        }
    }

    async fn hangup(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.hangups {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }

    fn reread(&mut self, state: &AppState, asked: bool) {
        let Some(path) = &self.path else { return };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                if asked || !self.last.is_empty() {
                    tracing::error!(path = %path.display(), %error, "cannot read the key file; the keys in force stay");
                }
                self.last.clear();
                return;
            }
        };
        if !asked && bytes == self.last {
            return;
        }
        self.last = bytes;
        let config = &state.config;
        let loaded = KeySet::parse(&self.last).and_then(|set| {
            let keys = TokenKeys::new(
                &set,
                &config.jwt_issuer,
                &config.jwt_audience,
                config.access_ttl,
                config.jwt_leeway,
            )?;
            Ok((set, keys))
        });
        match loaded {
            Ok((set, keys)) => {
                state.keys.replace(keys);
                tracing::info!(
                    path = %path.display(),
                    active = %set.active().kid,
                    kids = %set.kids().join(","),
                    "signing keys reloaded"
                );
            }
            Err(error) => tracing::error!(
                path = %path.display(),
                error = format!("{error:#}"),
                "the key file does not validate; the keys in force stay"
            ),
        }
    }
}
