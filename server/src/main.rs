//! The `tether` binary: parse the command line, then serve, create a user, or migrate.

use clap::Parser as _;

/// Thousands of long-lived sockets, each set up by short-lived allocations (the
/// handshake, the token): glibc's per-thread arenas keep the holes, mimalloc does not.
/// The `system-allocator` feature is for heap profilers (valgrind's DHAT, heaptrack),
/// which see only malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::io::Read as _;
use tether::App;
use tether::auth::keyset::{self, KeySet};
use tether::auth::passwords::Passwords;
use tether::config::{Cli, Command, Config, KeysCommand, ServiceCommand, UserCommand};
use tether::store::{self, CreateUser, NewUser};
use tether_shared::api::Role;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(config) => serve(*config).await,
        Command::Migrate { database_url } => {
            tether::telemetry::init("text");
            store::connect(&database_url).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Keys(KeysCommand::Generate { alg, kid, from_secret_file }) => {
            let key = match (from_secret_file, alg) {
                (Some(path), _) => {
                    let secret = tether::bootstrap::read_secret(&path)?;
                    KeySet::from_secret(&secret)?.active().clone()
                }
                (None, Some(alg)) => keyset::generate(alg, kid),
                (None, None) => anyhow::bail!("give --alg or --from-secret-file"),
            };
            println!("{}", serde_json::to_string(&key.to_private_jwk())?);
            Ok(())
        }
        Command::Service(command) => service(command).await,
        Command::User(UserCommand::Create { username, password_stdin: _, admin, database_url }) => {
            create_user(&username, admin, &database_url).await
        }
        Command::User(UserCommand::CreateMany { prefix, count, start, password_stdin: _, database_url }) => {
            create_many(&prefix, start, count, &database_url).await
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tether::telemetry::init(&config.log_format);
    // Each socket is a file: take the whole allowance the hard limit permits.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    let app = App::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "listening");
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The password on standard input, hashed with the default argon2id cost.
async fn hashed_password_from_stdin() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!((8..=128).contains(&password.chars().count()), "the password must have 8-128 characters");
    let defaults = Config::defaults();
    Passwords::new(defaults.argon2_memory_kib, defaults.argon2_iterations)?
        .hash(password)
        .await
        .map_err(anyhow::Error::from)
}

async fn create_many(prefix: &str, start: u32, count: u32, database_url: &str) -> anyhow::Result<()> {
    let names: Vec<String> = (start..start.saturating_add(count)).map(|n| format!("{prefix}{n}")).collect();
    let well_formed = |name: &String| {
        (3..=32).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    anyhow::ensure!(
        names.iter().all(well_formed),
        "names PREFIX<n> must be 3-32 characters of A-Z a-z 0-9 _ -"
    );
    let hash = hashed_password_from_stdin().await?;
    let store = store::connect(database_url).await?;
    let now = store::now();
    let mut created = 0;
    for chunk in names.chunks(1000) {
        let users: Vec<NewUser<'_>> = chunk
            .iter()
            .map(|name| NewUser {
                id: uuid::Uuid::new_v4(),
                username: name,
                password_hash: &hash,
                role: Role::Player.as_str(),
                created_at: now,
            })
            .collect();
        created += store.create_users(&users).await?;
    }
    println!("created {created} players ({} names were taken)", names.len() as u64 - created);
    Ok(())
}

async fn create_user(username: &str, admin: bool, database_url: &str) -> anyhow::Result<()> {
    let hash = hashed_password_from_stdin().await?;
    let store = store::connect(database_url).await?;
    let role = if admin { Role::Admin } else { Role::Player };
    let created = store
        .create_user(NewUser {
            id: uuid::Uuid::new_v4(),
            username,
            password_hash: &hash,
            role: role.as_str(),
            created_at: store::now(),
        })
        .await?;
    match created {
        CreateUser::Created => {
            println!("created {} {username}", role.as_str());
            Ok(())
        }
        CreateUser::UsernameTaken => anyhow::bail!("the username {username:?} is taken"),
    }
}

async fn service(command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create { name, database_url } => {
            let (record, client_secret) = tether::services::new_credential(&name)?;
            let store = store::connect(&database_url).await?;
            anyhow::ensure!(store.create_service(&record).await?, "the service name {name:?} is in use");
            let printed = serde_json::json!({
                "name": record.name,
                "client_id": record.client_id,
                "client_secret": client_secret,
            });
            println!("{printed}");
        }
        ServiceCommand::List { database_url } => {
            let store = store::connect(&database_url).await?;
            let rfc3339 =
                |at: time::OffsetDateTime| at.format(&time::format_description::well_known::Rfc3339).ok();
            for record in store.services().await? {
                let printed = serde_json::json!({
                    "name": record.name,
                    "client_id": record.client_id,
                    "created_at": rfc3339(record.created_at),
                    "revoked_at": record.revoked_at.and_then(rfc3339),
                });
                println!("{printed}");
            }
        }
        ServiceCommand::Revoke { name, database_url } => {
            let store = store::connect(&database_url).await?;
            anyhow::ensure!(
                store.revoke_service(&name, store::now()).await?,
                "no live service credential is named {name:?}"
            );
            println!("revoked {name}; every node refuses it within 5 s");
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
