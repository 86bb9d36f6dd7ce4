//! The store's own contract, on both backends: what a revocation writes, how the log
//! is read back across pages, how bans are judged, and the refresh compare-and-swap.

use std::time::Duration;
use tether::store::{
    self, AuditRecord, BanRecord, LogCursor, NewUser, RefreshOutcome, RevocationWrite, RevokeScope,
    SessionRecord, Store,
};
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

async fn user(store: &Store, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    let user = NewUser { id, username: name, password_hash: "x", role: "player", created_at: store::now() };
    store.create_user(user).await.expect("create a user");
    id
}

async fn sessions(store: &Store, user: Uuid, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let session = SessionRecord::new_live(user, store::now(), Duration::from_secs(3600), None, None);
        store.create_session(&session, Uuid::new_v4().as_bytes()).await.expect("create a session");
        ids.push(session.id);
    }
    ids
}

fn write(scope: RevokeScope, kind: &'static str) -> RevocationWrite<'static> {
    RevocationWrite {
        scope,
        at: store::now(),
        kind,
        reason: None,
        node_id: "node-test",
        ban: None,
        audit: None,
    }
}

on_both_backends! {
    async fn a_revocation_larger_than_a_page_is_read_back_whole_across_pages(db) {
        let store = store::connect(&db.url).await.unwrap();
        let player = user(&store, "pages").await;
        let mut created = sessions(&store, player, 25).await;
        let before = store.latest_revocation_seq().await.unwrap();
        let committed = store.revoke(write(RevokeScope::User(player), "kick")).await.unwrap();
        assert_eq!(committed.sessions.len(), 25);
        // A second, small event after it: the pages must cross into it too.
        let other = user(&store, "pages_other").await;
        created.extend(sessions(&store, other, 3).await);
        store.revoke(write(RevokeScope::User(other), "logout_all")).await.unwrap();

        let (head, bans_changed) = store.log_head_after(before).await.unwrap();
        assert_eq!(head, committed.seq + 1);
        assert!(!bans_changed);
        let mut cursor = LogCursor::after_event(before);
        let mut read = Vec::new();
        loop {
            let page = store.sessions_revoked_in_log(cursor, head, 7).await.unwrap();
            let Some(last) = page.last() else { break };
            cursor = LogCursor { seq: last.revocation_seq, session: last.session.id };
            read.extend(page.iter().map(|logged| logged.session.id));
        }
        let mut expected = created.clone();
        expected.sort();
        let mut unique = read.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(read.len(), 28, "each revoked session read exactly once");
        assert_eq!(unique, expected);
    }
}

on_both_backends! {
    async fn revoking_what_is_revoked_takes_nothing_so_a_retry_is_safe(db) {
        let store = store::connect(&db.url).await.unwrap();
        let player = user(&store, "retry").await;
        let [session] = sessions(&store, player, 1).await[..] else { unreachable!() };
        let first = store.revoke(write(RevokeScope::Session(session), "logout")).await.unwrap();
        let again = store.revoke(write(RevokeScope::Session(session), "admin_revoke")).await.unwrap();
        assert_eq!(first.sessions.len(), 1);
        assert!(again.sessions.is_empty());
        let stored = store.find_session(session).await.unwrap().unwrap();
        assert_eq!(stored.revoke_kind.as_deref(), Some("logout"), "the first reason stays");
    }
}

on_both_backends! {
    async fn a_ban_and_its_audit_entry_commit_with_the_revocation(db) {
        let store = store::connect(&db.url).await.unwrap();
        let admin = user(&store, "auditor").await;
        let player = user(&store, "banned").await;
        sessions(&store, player, 3).await;
        let now = store::now();
        let ban = BanRecord { user_id: player, reason: Some("cheating".into()), until: None, created_at: now, actor_id: admin };
        let audit = AuditRecord {
            id: Uuid::new_v4(),
            at: now,
            actor_id: admin,
            actor_name: "auditor".into(),
            action: "ban".into(),
            target_type: "user".into(),
            target_id: Some(player.to_string()),
            reason: Some("cheating".into()),
            sessions_revoked: 0,
            sockets_closed: 0,
            until: None,
        };
        let before = store.latest_revocation_seq().await.unwrap();
        let mut banning = write(RevokeScope::User(player), "ban");
        banning.ban = Some(&ban);
        banning.audit = Some(&audit);
        store.revoke(banning).await.unwrap();
        store.set_audit_sockets_closed(audit.id, 2).await.unwrap();

        assert!(store.active_ban(player, now).await.unwrap().is_some());
        let entry = store.audit_entries(1).await.unwrap().remove(0);
        assert_eq!((entry.id, entry.sessions_revoked, entry.sockets_closed), (audit.id, 3, 2));
        let (_, bans_changed) = store.log_head_after(before).await.unwrap();
        assert!(bans_changed, "other nodes must learn of the ban");

        let after_ban = store.latest_revocation_seq().await.unwrap();
        let unban_audit = AuditRecord { id: Uuid::new_v4(), action: "unban".into(), ..audit.clone() };
        assert!(store.unban(player, now, "node-test", &unban_audit).await.unwrap().is_some());
        assert!(store.unban(player, now, "node-test", &unban_audit).await.unwrap().is_none(), "nothing left to lift");
        assert!(store.active_ban(player, now).await.unwrap().is_none());
        let (head, bans_changed) = store.log_head_after(after_ban).await.unwrap();
        assert!(head > after_ban && bans_changed, "an unban is in the log too");
    }
}

on_both_backends! {
    async fn a_ban_until_sent_with_an_offset_is_judged_as_the_same_instant(db) {
        let store = store::connect(&db.url).await.unwrap();
        let admin = user(&store, "offset_admin").await;
        let player = user(&store, "offset_player").await;
        let now = store::now();
        // Two hours from now, written in Hawaii time: as text it sorts before `now` in UTC.
        let until = (now + Duration::from_secs(2 * 3600)).to_offset(UtcOffset::from_hms(-10, 0, 0).unwrap());
        let ban = BanRecord { user_id: player, reason: None, until: Some(until), created_at: now, actor_id: admin };
        let mut banning = write(RevokeScope::User(player), "ban");
        banning.ban = Some(&ban);
        store.revoke(banning).await.unwrap();

        let in_force = store.active_ban(player, now + Duration::from_secs(3600)).await.unwrap();
        let stored: OffsetDateTime = in_force.expect("still banned an hour later").until.unwrap();
        assert_eq!(stored, until, "the same instant");
        assert_eq!(stored.offset(), UtcOffset::UTC, "stored and answered in UTC");
        assert!(store.active_ban(player, now + Duration::from_secs(3 * 3600)).await.unwrap().is_none());
        assert_eq!(store.active_bans(now).await.unwrap().len(), 1);
    }
}

on_both_backends! {
    async fn of_two_rotations_of_one_refresh_token_exactly_one_wins(db) {
        let store = store::connect(&db.url).await.unwrap();
        let player = user(&store, "rotator").await;
        let session = SessionRecord::new_live(player, store::now(), Duration::from_secs(3600), None, None);
        store.create_session(&session, b"first").await.unwrap();
        let (a, b) = tokio::join!(
            store.rotate_refresh_token(b"first", b"second-a", store::now()),
            store.rotate_refresh_token(b"first", b"second-b", store::now()),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let rotated = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Rotated(_))).count();
        let reused = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Reused(_))).count();
        assert_eq!((rotated, reused), (1, 1));
        assert!(matches!(store.rotate_refresh_token(b"nope", b"x", store::now()).await.unwrap(), RefreshOutcome::Unknown));
    }
}
