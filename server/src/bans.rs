//! The bans in force, in memory, so that an upgrade with a ban-revoked session's token
//! learns whether to close 4003 (still banned) or 4001 (since unbanned, or the ban ran
//! out) without asking the database. Logins and refreshes still ask the store, which
//! holds the reason and is the authority.

use dashmap::DashMap;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// Banned users and when each ban lifts (None: never). Cheap to clone.
#[derive(Clone, Default)]
pub struct BanList {
    until: Arc<DashMap<Uuid, Option<OffsetDateTime>>>,
}

impl BanList {
    pub fn ban(&self, user: Uuid, until: Option<OffsetDateTime>) {
        self.until.insert(user, until);
    }

    pub fn unban(&self, user: Uuid) {
        self.until.remove(&user);
    }

    pub fn is_banned(&self, user: Uuid, now: OffsetDateTime) -> bool {
        self.until.get(&user).is_some_and(|until| until.is_none_or(|until| until > now))
    }

    /// Replaces the whole list with what the store holds (at start, and when another
    /// node has banned or unbanned someone).
    pub fn replace(&self, bans: impl IntoIterator<Item = (Uuid, Option<OffsetDateTime>)>) {
        let fresh: std::collections::HashMap<_, _> = bans.into_iter().collect();
        self.until.retain(|user, _| fresh.contains_key(user));
        for (user, until) in fresh {
            self.until.insert(user, until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_ban_holds_until_it_lifts_or_runs_out() {
        let bans = BanList::default();
        let now = crate::store::now();
        let (forever, for_an_hour) = (Uuid::new_v4(), Uuid::new_v4());
        bans.ban(forever, None);
        bans.ban(for_an_hour, Some(now + Duration::from_secs(3600)));
        assert!(bans.is_banned(forever, now + Duration::from_secs(86_400)));
        assert!(bans.is_banned(for_an_hour, now));
        assert!(!bans.is_banned(for_an_hour, now + Duration::from_secs(3600)));
        bans.unban(forever);
        assert!(!bans.is_banned(forever, now));
        bans.replace([(forever, None)]);
        assert!(bans.is_banned(forever, now));
        assert!(!bans.is_banned(for_an_hour, now), "replace drops what the store no longer has");
    }
}
