//! WebSocket close codes of the contract, and how a close reason is formed.

/// Normal close.
pub const NORMAL: u16 = 1000;
/// The server is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// Policy: repeated bad frames, message rate exceeded, slow consumer.
pub const POLICY: u16 = 1008;
/// A message over the size limit.
pub const TOO_BIG: u16 = 1009;
/// Try again later: this node cannot vouch for its sessions right now (stale, see the
/// contract's "Cluster").
pub const TRY_AGAIN_LATER: u16 = 1013;
/// Session revoked (logout, logout-all, session delete, admin revoke, revoke-all, refresh reuse).
pub const REVOKED: u16 = 4001;
/// Session past its absolute lifetime.
pub const EXPIRED: u16 = 4002;
/// The user is banned.
pub const BANNED: u16 = 4003;
/// Kicked by an admin.
pub const KICKED: u16 = 4004;
/// A newer login of the same user took over (single-session policy).
pub const REPLACED: u16 = 4005;
/// Token missing, malformed, forged or expired at upgrade: refresh and reconnect.
pub const INVALID_TOKEN: u16 = 4401;

/// RFC 6455 leaves 123 bytes for the reason of a close frame.
pub const MAX_REASON_BYTES: usize = 123;

/// `<kind>` or `<kind>: <detail>`, cut to [`MAX_REASON_BYTES`] on a character boundary.
pub fn reason(kind: &str, detail: Option<&str>) -> String {
    let full = match detail.map(str::trim).filter(|d| !d.is_empty()) {
        Some(detail) => format!("{kind}: {detail}"),
        None => kind.to_owned(),
    };
    truncate_on_char_boundary(full, MAX_REASON_BYTES)
}

fn truncate_on_char_boundary(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_joins_kind_and_detail() {
        assert_eq!(reason("kicked", Some("spamming")), "kicked: spamming");
        assert_eq!(reason("revoked", None), "revoked");
        assert_eq!(reason("revoked", Some("  ")), "revoked");
    }

    #[test]
    fn reason_is_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = reason("banned", Some(&long));
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.starts_with("banned: é"));
        assert_eq!(cut.len(), 122, "the last two-byte character that fits is kept");
    }
}
