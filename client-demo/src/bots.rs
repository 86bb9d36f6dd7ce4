//! Bot accounts (`<prefix>1` .. `<prefix>N`, one password) and their logins, each
//! login a session; and the admin's login for the admin API.

use crate::progress;
use crate::scenario::Ctx;
use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, stream};
use std::sync::Arc;
use tether_shared::SessionId;
use tether_shared::api::Role;
use tokio::time::Instant;

/// One logged-in session of a bot.
#[derive(Clone)]
pub struct Session {
    pub id: SessionId,
    pub token: Arc<str>,
}

/// Logs in `count` sessions, spread over the bot accounts round robin (session k is
/// `<prefix>{k % users + 1}`), at most `--login-concurrency` at once; registers the
/// accounts first with `--register`. Fails only when no login succeeded.
pub async fn log_in(ctx: &Ctx<'_>, count: u32) -> anyhow::Result<Vec<Session>> {
    let common = ctx.common;
    let users = common.users.unwrap_or(count).max(1);
    if common.register {
        register(ctx, users).await;
    }
    let bar = progress::counter(u64::from(count), "login");
    let concurrency = common.login_concurrency as usize;
    let results: Vec<_> = stream::iter(0..count)
        .map(|k| {
            let username = format!("{}{}", common.users_prefix, k % users + 1);
            let bar = bar.clone();
            async move {
                let started = Instant::now();
                let result = ctx.api.login(&username, &common.bot_password).await;
                if result.is_ok() {
                    ctx.login_latency.record(started.elapsed());
                }
                bar.inc(1);
                result
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut sessions = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(pair) => sessions.push(Session { id: pair.session_id, token: pair.access_token.into() }),
            Err(kind) => ctx.failures.add(kind),
        }
    }
    eprintln!("logged in {} of {count} sessions over {users} bot accounts", sessions.len());
    if sessions.is_empty() {
        let failures = ctx.failures.snapshot();
        let invalid = failures.keys().any(|kind| kind.contains("invalid_credentials"));
        bail!(
            "no bot could log in ({failures:?}).{}",
            if invalid {
                format!(
                    " Create the accounts first: `tether user create-many --prefix {} --count {users} \
                     --password-stdin`, or pass --register (and the right --bot-password)",
                    common.users_prefix
                )
            } else {
                String::new()
            }
        );
    }
    Ok(sessions)
}

/// Creates the bot accounts through the public API; an existing one counts as done.
async fn register(ctx: &Ctx<'_>, users: u32) {
    let common = ctx.common;
    let bar = progress::counter(u64::from(users), "register");
    let results: Vec<_> = stream::iter(1..=users)
        .map(|n| {
            let username = format!("{}{n}", common.users_prefix);
            let bar = bar.clone();
            async move {
                let result = ctx.api.register(&username, &common.bot_password).await;
                bar.inc(1);
                result
            }
        })
        .buffer_unordered(common.login_concurrency as usize)
        .collect()
        .await;
    bar.finish_and_clear();
    let (mut created, mut existed) = (0, 0);
    for result in results {
        match result {
            Ok(true) => created += 1,
            Ok(false) => existed += 1,
            Err(kind) => ctx.failures.add(kind),
        }
    }
    eprintln!("bot accounts: {created} created, {existed} already there");
}

/// The admin's access token, from `--admin-password` or `--admin-password-file`.
pub async fn admin_token(ctx: &Ctx<'_>) -> anyhow::Result<String> {
    let common = ctx.common;
    let password = match (&common.admin_password, &common.admin_password_file) {
        (Some(password), _) => password.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --admin-password-file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => bail!(
            "this scenario needs the admin's password: --admin-password-file PATH (a fresh server \
             writes it to tether.db.admin-password) or --admin-password"
        ),
    };
    let pair = ctx
        .api
        .login(&common.admin_user, &password)
        .await
        .map_err(|kind| anyhow::anyhow!("admin login as {:?} failed: {kind}", common.admin_user))?;
    if pair.user.role != Role::Admin {
        bail!("{:?} is not an admin", common.admin_user);
    }
    Ok(pair.access_token)
}
