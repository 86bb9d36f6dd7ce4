//! Revocation in the order the contract needs: persist, mark revoked in memory,
//! write the close frames, and only then let the caller answer.

use crate::app::AppState;
use crate::sessions::RevokeKind;
use crate::store::{self, RevocationRecord, RevokeScope};
use crate::telemetry::metrics;
use std::time::{Duration, Instant};
use tether_shared::api::RevokeResponse;

/// Socket tasks write a close frame or abort without waiting on the peer, so this
/// bound is only a guard against a stuck task; it is never a normal wait.
pub const CLOSE_CONFIRM_BOUND: Duration = Duration::from_secs(5);

/// Longest reason an admin may give; close frames carry at most 123 bytes of it.
pub const MAX_REASON_CHARS: usize = 500;

pub async fn revoke(
    state: &AppState,
    scope: RevokeScope,
    kind: RevokeKind,
    reason: Option<&str>,
) -> anyhow::Result<RevokeResponse> {
    let started = Instant::now();
    let revocation =
        RevocationRecord { at: store::now(), kind: kind.as_str(), reason, node_id: &state.node_id };
    let records = state.store.revoke_sessions(scope, revocation).await?;
    let plan = state.sessions.revoke(&records);
    let sockets_closed = plan.execute(CLOSE_CONFIRM_BOUND).await;
    metrics::revoked(kind, records.len() as u64);
    if sockets_closed > 0 {
        metrics::revoke_to_close(started.elapsed());
    }
    tracing::info!(kind = kind.as_str(), sessions = records.len(), sockets_closed, "sessions revoked");
    Ok(RevokeResponse { sessions_revoked: records.len() as u64, sockets_closed })
}
