//! What a fresh `serve` needs before its first request: the signing secret and a
//! first admin, created once and said once.

use crate::app::AppState;
use crate::auth::keyset::KeySet;
use crate::config::Config;
use crate::store::{self, NewUser};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use tether_shared::api::Role;

pub const FIRST_ADMIN_NAME: &str = "admin";

/// The keys of `--jwt-keys-file`, or the v1 secret as a key set of one.
pub fn key_set(config: &Config) -> anyhow::Result<KeySet> {
    anyhow::ensure!(
        config.jwt_keys_file.is_none() || config.jwt_secret_file.is_none(),
        "give --jwt-keys-file or --jwt-secret-file (or their TETHER_* variables), not both"
    );
    match &config.jwt_keys_file {
        Some(path) => KeySet::read(path),
        None => KeySet::from_secret(&jwt_secret(config)?),
    }
}

/// The secret from `--jwt-secret-file`; with SQLite and no such flag, the one kept
/// beside the database file (created on first start).
fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &config.jwt_secret_file {
        return read_secret(path);
    }
    anyhow::ensure!(
        !config.is_postgres(),
        "with PostgreSQL, --jwt-secret-file or --jwt-keys-file (or TETHER_JWT_SECRET_FILE, \
         TETHER_JWT_KEYS_FILE) is required, so that every node signs with the same keys"
    );
    let Some(database_file) = sqlite_file(&config.database_url) else {
        tracing::warn!("in-memory database: using a signing secret that lives only as long as this process");
        return Ok(random_text(48).into_bytes());
    };
    let path = sibling(&database_file, "jwt-secret");
    if !path.exists() {
        write_owner_only(&path, &random_text(48))?;
        tracing::info!(path = %path.display(), "created a JWT signing secret (owner-only)");
    }
    read_secret(&path)
}

pub fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let contents = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the JWT secret file {}: {e}", path.display()))?;
    let secret = contents.trim_ascii().to_vec();
    anyhow::ensure!(secret.len() >= 32, "the JWT secret in {} is shorter than 32 bytes", path.display());
    Ok(secret)
}

/// Creates the user `admin` with a random password when no admin exists, and says
/// the password once: in the log, and for SQLite in an owner-only file beside the
/// database. With several nodes on one PostgreSQL, the unique username decides
/// which node creates it.
pub async fn first_admin(state: &AppState) -> anyhow::Result<()> {
    let password = random_text(18);
    let hash = state.passwords.hash(password.clone()).await?;
    let created = state
        .store
        .create_first_admin(NewUser {
            id: uuid::Uuid::new_v4(),
            username: FIRST_ADMIN_NAME,
            password_hash: &hash,
            role: Role::Admin.as_str(),
            created_at: store::now(),
        })
        .await?;
    if !created {
        return Ok(());
    }
    let saved_to = match sqlite_file(&state.config.database_url) {
        Some(database_file) => {
            let path = sibling(&database_file, "admin-password");
            write_owner_only(&path, &format!("{password}\n"))?;
            path.display().to_string()
        }
        None => "nowhere else".to_owned(),
    };
    tracing::warn!(
        username = FIRST_ADMIN_NAME,
        password = %password,
        saved_to = %saved_to,
        "no admin existed: created one; this password is shown only this once"
    );
    Ok(())
}

/// The file of a `sqlite://PATH[?options]` URL; None for an in-memory database.
pub fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let rest = database_url.strip_prefix("sqlite://").or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn sibling(database_file: &Path, suffix: &str) -> PathBuf {
    let mut name = database_file.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn write_owner_only(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn random_text(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_file("sqlite://tether.db"), Some(PathBuf::from("tether.db")));
        assert_eq!(sqlite_file("sqlite:///tmp/x.db?mode=rwc"), Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://localhost/x"), None);
        assert_eq!(sibling(Path::new("/tmp/x.db"), "jwt-secret"), PathBuf::from("/tmp/x.db.jwt-secret"));
    }
}
