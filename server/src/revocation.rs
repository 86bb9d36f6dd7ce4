//! Revocation: its vocabulary (kinds, close codes and reasons) and the one path every
//! revoking call takes.
//!
//! The path: mark the sessions this node knows revoked in memory and start closing
//! their sockets; commit the event to the store meanwhile; then mark (and close) what
//! the store took that memory did not know; tell the other nodes; answer. It runs in a
//! task of its own, which the handler only awaits, so a client that hangs up, or a
//! handler that fails after the commit, never leaves a committed revocation unapplied
//! in memory. Memory is marked first and never unmarked: if the commit fails the call
//! answers 5xx with the sessions already refused here, and the caller's retry takes the
//! same sessions in the store (they are still live there) and commits them.

use crate::app::AppState;
use crate::store::{self, AuditRecord, BanRecord, RevocationWrite, RevokeScope};
use crate::telemetry::metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tether_shared::api::RevokeResponse;
use tether_shared::close;
use time::OffsetDateTime;

/// Socket tasks write a close frame or abort without waiting on the peer, so this
/// bound is only a guard against a stuck task; it is never a normal wait.
pub const CLOSE_CONFIRM_BOUND: Duration = Duration::from_secs(5);

/// Longest reason an admin may give; close frames carry at most 123 bytes of it.
pub const MAX_REASON_CHARS: usize = 500;

/// Why a session was revoked; decides the close code and the HTTP answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeKind {
    Logout,
    LogoutAll,
    SessionDelete,
    AdminRevoke,
    RevokeAll,
    RefreshReuse,
    Kick,
    Ban,
    Replaced,
}

impl RevokeKind {
    const ALL: [RevokeKind; 9] = [
        RevokeKind::Logout,
        RevokeKind::LogoutAll,
        RevokeKind::SessionDelete,
        RevokeKind::AdminRevoke,
        RevokeKind::RevokeAll,
        RevokeKind::RefreshReuse,
        RevokeKind::Kick,
        RevokeKind::Ban,
        RevokeKind::Replaced,
    ];

    /// The name stored in the database and sent to other services.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeKind::Logout => "logout",
            RevokeKind::LogoutAll => "logout_all",
            RevokeKind::SessionDelete => "session_delete",
            RevokeKind::AdminRevoke => "admin_revoke",
            RevokeKind::RevokeAll => "revoke_all",
            RevokeKind::RefreshReuse => "refresh_reuse",
            RevokeKind::Kick => "kick",
            RevokeKind::Ban => "ban",
            RevokeKind::Replaced => "replaced",
        }
    }

    pub fn parse(text: &str) -> Option<RevokeKind> {
        RevokeKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The close code of a session revoked this way. A ban closes 4003 only while the
    /// user is still banned; once the ban is lifted (or has run out) it is an ordinary
    /// revocation, 4001.
    pub fn close_code(self, still_banned: bool) -> u16 {
        match self {
            RevokeKind::Kick => close::KICKED,
            RevokeKind::Ban if still_banned => close::BANNED,
            RevokeKind::Replaced => close::REPLACED,
            _ => close::REVOKED,
        }
    }

    /// The `<kind>` part of a close reason.
    fn reason_kind(self) -> &'static str {
        match self {
            RevokeKind::Kick => "kicked",
            RevokeKind::Ban => "banned",
            RevokeKind::Replaced => "replaced",
            _ => "revoked",
        }
    }

    /// Said after the kind when no one gave a reason.
    fn default_detail(self) -> Option<&'static str> {
        match self {
            RevokeKind::Logout => Some("logout"),
            RevokeKind::LogoutAll => Some("logout everywhere"),
            RevokeKind::SessionDelete => Some("session deleted"),
            RevokeKind::RefreshReuse => Some("refresh token reuse"),
            RevokeKind::Replaced => Some("a newer login took over"),
            _ => None,
        }
    }
}

/// A session's revocation as remembered in memory; one is shared by every session a
/// call revokes.
#[derive(Debug)]
pub struct Revocation {
    pub kind: RevokeKind,
    pub reason: Option<String>,
    pub at: OffsetDateTime,
    /// The close reason, formed once per revocation rather than once per socket.
    close_reason: Arc<str>,
    /// False from the in-memory mark until the store has committed it: until then the
    /// session's own logout may be sent again, so that its retry can commit it.
    persisted: AtomicBool,
}

impl Revocation {
    /// A revocation being made now, not yet in the store.
    pub fn new(kind: RevokeKind, reason: Option<String>, at: OffsetDateTime) -> Revocation {
        let detail = reason.as_deref().or(kind.default_detail());
        let close_reason = close::reason(kind.reason_kind(), detail).into();
        Revocation { kind, reason, at, close_reason, persisted: AtomicBool::new(false) }
    }

    pub fn is_persisted(&self) -> bool {
        self.persisted.load(Ordering::Acquire)
    }

    pub fn mark_persisted(&self) {
        self.persisted.store(true, Ordering::Release);
    }

    /// `<kind>` or `<kind>: <reason>`, at most 123 bytes.
    pub fn close_reason(&self) -> Arc<str> {
        self.close_reason.clone()
    }

    /// The revocation a stored session carries, if any.
    pub fn of_record(record: &store::SessionRecord) -> Option<Revocation> {
        let at = record.revoked_at?;
        let kind =
            record.revoke_kind.as_deref().and_then(RevokeKind::parse).unwrap_or(RevokeKind::AdminRevoke);
        let revocation = Revocation::new(kind, record.revoke_reason.clone(), at);
        revocation.mark_persisted();
        Some(revocation)
    }
}

/// One revoking call, as a handler asks for it.
pub struct RevokeOrder {
    pub scope: RevokeScope,
    pub kind: RevokeKind,
    pub reason: Option<String>,
    /// Written in the same transaction (an admin's ban).
    pub ban: Option<BanRecord>,
    /// Written in the same transaction with `sessions_revoked`; `sockets_closed` is
    /// filled in once the sockets are closed.
    pub audit: Option<AuditRecord>,
}

impl RevokeOrder {
    pub fn new(scope: RevokeScope, kind: RevokeKind) -> RevokeOrder {
        RevokeOrder { scope, kind, reason: None, ban: None, audit: None }
    }
}

/// Revokes, closes this node's sockets of the affected sessions, persists, and returns
/// once every one of those sockets has had its close frame (or was aborted).
pub async fn revoke(state: &AppState, order: RevokeOrder) -> anyhow::Result<RevokeResponse> {
    let state = state.clone();
    // The handler's future may be dropped (its client hung up); this task is not.
    let revocations = state.revocations.clone();
    revocations.spawn(async move { run(&state, order).await }).await?
}

async fn run(state: &AppState, order: RevokeOrder) -> anyhow::Result<RevokeResponse> {
    let started = Instant::now();
    let at = store::now();
    let revocation = Arc::new(Revocation::new(order.kind, order.reason.clone(), at));
    if let Some(ban) = &order.ban {
        state.bans.ban(ban.user_id, ban.until);
    }
    let known = state.sessions.revoke_in_scope(order.scope, &revocation, at);
    let write = RevocationWrite {
        scope: order.scope,
        at,
        kind: order.kind.as_str(),
        reason: order.reason.as_deref(),
        node_id: &state.node_id,
        ban: order.ban.as_ref(),
        audit: order.audit.as_ref(),
    };
    // The known sockets close while the commit is under way: both finish before the answer.
    let (closed_known, committed) =
        tokio::join!(known.execute(CLOSE_CONFIRM_BOUND), state.store.revoke(write));
    let committed = match committed {
        Ok(committed) => committed,
        Err(error) => {
            tracing::error!(
                kind = order.kind.as_str(),
                error = format!("{error:#}"),
                "revocation not committed; refused here, the caller must retry"
            );
            return Err(error);
        }
    };
    // Sessions the store took that this node had not heard of (created on another node).
    let closed_later =
        state.sessions.revoke(&committed.sessions, &revocation).execute(CLOSE_CONFIRM_BOUND).await;
    let sockets_closed = closed_known + closed_later;
    // A single node applied it just now; a cluster's nodes advance as they read the
    // log, so that no node streams an event before every earlier one.
    if state.bus.is_none() {
        state.feed.advance(committed.seq);
    }
    announce(state, committed.seq).await;
    if let Some(audit) = &order.audit
        && let Err(error) = state.store.set_audit_sockets_closed(audit.id, sockets_closed).await
    {
        tracing::warn!(error = format!("{error:#}"), "cannot record the sockets a revocation closed");
    }
    let sessions_revoked = committed.sessions.len() as u64;
    metrics::revoked(order.kind, sessions_revoked);
    if sockets_closed > 0 {
        metrics::revoke_to_close(started.elapsed());
    }
    tracing::info!(
        kind = order.kind.as_str(),
        sessions = sessions_revoked,
        sockets_closed,
        "sessions revoked"
    );
    Ok(RevokeResponse { sessions_revoked, sockets_closed })
}

/// Wakes the other nodes for log event `seq`; a lost wake-up costs them only their
/// next poll.
pub async fn announce(state: &AppState, seq: i64) {
    if let Some(bus) = &state.bus
        && let Err(error) = bus.announce(seq).await
    {
        tracing::warn!(error = format!("{error:#}"), seq, "cannot announce to the cluster");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_closes_4003_only_while_it_holds() {
        assert_eq!(RevokeKind::Ban.close_code(true), 4003);
        assert_eq!(RevokeKind::Ban.close_code(false), 4001);
        assert_eq!(RevokeKind::Kick.close_code(false), 4004);
        assert_eq!(RevokeKind::Replaced.close_code(true), 4005);
        assert_eq!(RevokeKind::Logout.close_code(true), 4001);
    }

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in RevokeKind::ALL {
            assert_eq!(RevokeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(RevokeKind::parse("unban"), None);
    }

    #[test]
    fn close_reasons_name_the_kind_and_the_detail() {
        let at = store::now();
        assert_eq!(
            &*Revocation::new(RevokeKind::Kick, Some("spamming".into()), at).close_reason(),
            "kicked: spamming"
        );
        assert_eq!(&*Revocation::new(RevokeKind::Logout, None, at).close_reason(), "revoked: logout");
        assert_eq!(&*Revocation::new(RevokeKind::Ban, None, at).close_reason(), "banned");
    }
}
