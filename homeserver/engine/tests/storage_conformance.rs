//! Storage conformance: one suite, every backend.
//!
//! Each test is an `async fn(&Storage)` that drives the storage traits the way
//! the services do and checks what a user would notice: the login that still
//! works, the message that reads back in order, the token that cannot be used
//! twice. [`conformance!`] runs every test against SQLite and, when
//! `HS_TEST_POSTGRES_URL` is set, against a fresh PostgreSQL database; adding a
//! test means writing the function and naming it there. Tests named under
//! `conformance!(timeline: ...)` also run with the message bodies in a CQL
//! event log when built with the `cql` feature and `HS_TEST_CQL_URL` names a
//! node (`scripts/test.sh scaleout`); `conformance/split_layout.rs` checks where each
//! part of an event lands in that layout.
//!
//! Run: `cargo test -p hs-engine --test storage_conformance`, and
//! `cargo test -p hs-engine --features cql --test storage_conformance` with
//! `HS_TEST_CQL_URL=host:port`.

mod common;
#[cfg(feature = "cql")]
#[path = "conformance/split_layout.rs"]
mod split_layout;

use common::{pdu, Ev};
use hs_engine::storage::{
    DeviceRecord, Direction, MembershipRecord, NewToken, RoomRecord, Storage, UserRecord,
};
use serde_json::json;

conformance!(
    users,
    deactivation_logs_out_everywhere,
    devices,
    delete_device_removes_only_its_tokens,
    access_tokens,
    refresh_token_is_single_use,
    refresh_token_is_single_use_under_concurrency,
    filters,
    registration_tokens,
    rooms,
    aliases,
);

// Tests that persist or read events: also run with the CQL event log.
conformance!(
    timeline: state_events_update_current_state_and_memberships,
    snapshot_chain_resolves_nearest_entry,
    transaction_ids,
    redaction_rewrites_target,
    room_events_ranges,
    state_key_history_oldest_first,
    current_state_events,
    forget_room,
    account_data,
    failed_persist_writes_nothing,
);

const ROOM: &str = "!room:example.org";
const OTHER_ROOM: &str = "!other:example.org";
const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";

fn user(user_id: &str) -> UserRecord {
    UserRecord {
        user_id: user_id.to_owned(),
        password_hash: Some("$argon2id$hash".to_owned()),
        is_admin: false,
        deactivated: false,
        displayname: None,
        avatar_url: None,
        created_ts: 1_700_000_000_000,
    }
}

fn device(user_id: &str, device_id: &str, display_name: Option<&str>) -> DeviceRecord {
    DeviceRecord {
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        display_name: display_name.map(str::to_owned),
        last_seen_ts: None,
        last_seen_ip: None,
    }
}

fn token<'a>(
    access: &'a str,
    refresh: Option<&'a str>,
    user_id: &'a str,
    device_id: &'a str,
) -> NewToken<'a> {
    NewToken {
        access_token: access,
        refresh_token: refresh,
        user_id,
        device_id,
        expires_ts: None,
    }
}

fn room(room_id: &str, is_public: bool) -> RoomRecord {
    RoomRecord {
        room_id: room_id.to_owned(),
        room_version: "11".to_owned(),
        creator: ALICE.to_owned(),
        is_public,
    }
}

/// Creates `room_id` with an `m.room.create` (snapshot `snapshot`) and the
/// creator's join (snapshot `snapshot + 1`) at positions `pos` and `pos + 1`.
async fn create_room_with_alice(s: &Storage, room_id: &str, pos: i64, snapshot: i64) {
    s.rooms.create_room(&room(room_id, false)).await.unwrap();
    let create = Ev::new(
        room_id,
        pos,
        &format!("$create{pos}"),
        ALICE,
        "m.room.create",
        json!({ "creator": ALICE }),
    )
    .state("", (snapshot, 0));
    s.timeline.persist_event(&create.build()).await.unwrap();
    let join = Ev::member(
        room_id,
        pos + 1,
        &format!("$join{}", pos + 1),
        ALICE,
        "join",
        (snapshot + 1, snapshot),
    );
    s.timeline.persist_event(&join.build()).await.unwrap();
}

/// `(type, state_key, event_id)` triples, sorted for comparison.
fn sorted(mut state: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    state.sort();
    state
}

fn triple(event_type: &str, state_key: &str, event_id: &str) -> (String, String, String) {
    (
        event_type.to_owned(),
        state_key.to_owned(),
        event_id.to_owned(),
    )
}

/// Owned pairs, to compare with what the store returns.
fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn ids(events: &[hs_engine::storage::StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

async fn sorted_members(s: &Storage, room_id: &str) -> Vec<(String, String)> {
    let mut members: Vec<_> = s
        .rooms
        .members(room_id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.user_id, m.membership))
        .collect();
    members.sort();
    members
}

async fn rooms_of(s: &Storage, user_id: &str) -> Vec<(String, String)> {
    let mut rooms: Vec<_> = s
        .rooms
        .memberships_for_user(user_id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.room_id, m.membership))
        .collect();
    rooms.sort();
    rooms
}

// ---------------------------------------------------------------------------
// Accounts

async fn users(s: &Storage) {
    let a = s.accounts.as_ref();
    let mut alice = user(ALICE);
    alice.is_admin = true;
    alice.displayname = Some("Alice".to_owned());
    assert!(
        a.create_user(&alice).await.unwrap(),
        "a new user id is accepted"
    );

    // Registering the same id again must not overwrite the existing account.
    let mut impostor = user(ALICE);
    impostor.password_hash = Some("impostor".to_owned());
    assert!(
        !a.create_user(&impostor).await.unwrap(),
        "a taken user id is refused"
    );

    let got = a.get_user(ALICE).await.unwrap().expect("alice exists");
    assert_eq!(got.user_id, ALICE);
    assert_eq!(got.password_hash.as_deref(), Some("$argon2id$hash"));
    assert!(got.is_admin);
    assert!(!got.deactivated);
    assert_eq!(got.displayname.as_deref(), Some("Alice"));
    assert_eq!(got.avatar_url, None);
    assert_eq!(got.created_ts, 1_700_000_000_000);
    assert!(a.get_user(BOB).await.unwrap().is_none());

    a.set_password_hash(ALICE, "$argon2id$new").await.unwrap();
    a.set_displayname(ALICE, Some("Alice Liddell"))
        .await
        .unwrap();
    a.set_avatar_url(ALICE, Some("mxc://example.org/abc"))
        .await
        .unwrap();
    let got = a.get_user(ALICE).await.unwrap().unwrap();
    assert_eq!(got.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(got.displayname.as_deref(), Some("Alice Liddell"));
    assert_eq!(got.avatar_url.as_deref(), Some("mxc://example.org/abc"));

    a.set_displayname(ALICE, None).await.unwrap();
    a.set_avatar_url(ALICE, None).await.unwrap();
    let got = a.get_user(ALICE).await.unwrap().unwrap();
    assert_eq!(got.displayname, None, "the display name can be removed");
    assert_eq!(got.avatar_url, None, "the avatar can be removed");

    // A user without a password (e.g. registered through SSO) round-trips too.
    let mut bob = user(BOB);
    bob.password_hash = None;
    assert!(a.create_user(&bob).await.unwrap());
    let got = a.get_user(BOB).await.unwrap().unwrap();
    assert_eq!(got.password_hash, None);
    assert!(!got.is_admin);
}

async fn deactivation_logs_out_everywhere(s: &Storage) {
    let a = s.accounts.as_ref();
    a.create_user(&user(ALICE)).await.unwrap();
    a.create_user(&user(BOB)).await.unwrap();
    a.upsert_device(&device(ALICE, "PHONE", None))
        .await
        .unwrap();
    a.upsert_device(&device(ALICE, "LAPTOP", None))
        .await
        .unwrap();
    a.upsert_device(&device(BOB, "PHONE", None)).await.unwrap();
    a.insert_token(&token("alice_phone", Some("alice_phone_r"), ALICE, "PHONE"))
        .await
        .unwrap();
    a.insert_token(&token("alice_laptop", None, ALICE, "LAPTOP"))
        .await
        .unwrap();
    a.insert_token(&token("bob_phone", None, BOB, "PHONE"))
        .await
        .unwrap();

    a.set_deactivated(ALICE).await.unwrap();

    let alice = a.get_user(ALICE).await.unwrap().unwrap();
    assert!(alice.deactivated);
    assert_eq!(
        alice.password_hash, None,
        "a deactivated account cannot log in with its password"
    );
    assert!(a.get_token("alice_phone").await.unwrap().is_none());
    assert!(a.get_token("alice_laptop").await.unwrap().is_none());
    let refreshed = a
        .rotate_refresh_token(
            "alice_phone_r",
            &token("new", Some("new_r"), ALICE, "PHONE"),
        )
        .await
        .unwrap();
    assert!(
        refreshed.is_none(),
        "a deactivated account's refresh token is void"
    );
    assert!(a.get_token("new").await.unwrap().is_none());

    let bob = a
        .get_token("bob_phone")
        .await
        .unwrap()
        .expect("other users stay logged in");
    assert_eq!(bob.user_id, BOB);
    assert!(!a.get_user(BOB).await.unwrap().unwrap().deactivated);
    let (token, owner) = a
        .get_token_owner("bob_phone")
        .await
        .unwrap()
        .expect("the token and its owner in one read");
    assert_eq!(
        (token.user_id.as_str(), token.device_id.as_str()),
        (BOB, "PHONE")
    );
    assert_eq!(owner.user_id, BOB);
    assert!(!owner.deactivated && !owner.is_admin);
    assert!(a.get_token_owner("alice_laptop").await.unwrap().is_none());
    assert!(a.get_token_owner("no such token").await.unwrap().is_none());
}

async fn devices(s: &Storage) {
    let a = s.accounts.as_ref();
    let mut phone = device(ALICE, "PHONE", Some("Alice's phone"));
    phone.last_seen_ts = Some(100);
    phone.last_seen_ip = Some("10.0.0.1".to_owned());
    a.upsert_device(&phone).await.unwrap();

    // Logging in again on the same device without a name keeps the old name.
    let mut again = device(ALICE, "PHONE", None);
    again.last_seen_ts = Some(200);
    again.last_seen_ip = Some("10.0.0.2".to_owned());
    a.upsert_device(&again).await.unwrap();
    let got = a
        .get_device(ALICE, "PHONE")
        .await
        .unwrap()
        .expect("device exists");
    assert_eq!(got.display_name.as_deref(), Some("Alice's phone"));
    assert_eq!(got.last_seen_ts, Some(200));
    assert_eq!(got.last_seen_ip.as_deref(), Some("10.0.0.2"));

    // ... and a new name replaces it.
    a.upsert_device(&device(ALICE, "PHONE", Some("Work phone")))
        .await
        .unwrap();
    let got = a.get_device(ALICE, "PHONE").await.unwrap().unwrap();
    assert_eq!(got.display_name.as_deref(), Some("Work phone"));

    a.upsert_device(&device(ALICE, "CCCCCC", None))
        .await
        .unwrap();
    a.upsert_device(&device(ALICE, "AAAAAA", Some("A")))
        .await
        .unwrap();
    a.upsert_device(&device(ALICE, "BBBBBB", None))
        .await
        .unwrap();
    a.upsert_device(&device(BOB, "BOBDEV", None)).await.unwrap();
    let listed: Vec<_> = a
        .list_devices(ALICE)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(
        listed,
        ["AAAAAA", "BBBBBB", "CCCCCC", "PHONE"],
        "own devices only, ordered by device id"
    );
    assert_eq!(
        a.list_devices("@nobody:example.org").await.unwrap().len(),
        0
    );

    assert!(a
        .set_device_display_name(ALICE, "BBBBBB", Some("Tablet"))
        .await
        .unwrap());
    assert_eq!(
        a.get_device(ALICE, "BBBBBB")
            .await
            .unwrap()
            .unwrap()
            .display_name
            .as_deref(),
        Some("Tablet")
    );
    assert!(a
        .set_device_display_name(ALICE, "AAAAAA", None)
        .await
        .unwrap());
    assert_eq!(
        a.get_device(ALICE, "AAAAAA")
            .await
            .unwrap()
            .unwrap()
            .display_name,
        None
    );
    assert!(
        !a.set_device_display_name(ALICE, "NOSUCH", Some("x"))
            .await
            .unwrap(),
        "renaming an unknown device"
    );
    assert!(
        !a.set_device_display_name(BOB, "PHONE", Some("x"))
            .await
            .unwrap(),
        "renaming another user's device"
    );
    assert!(
        a.get_device(BOB, "PHONE").await.unwrap().is_none(),
        "a failed rename creates nothing"
    );

    a.touch_device(ALICE, "CCCCCC", 12345, Some("192.0.2.7"))
        .await
        .unwrap();
    let got = a.get_device(ALICE, "CCCCCC").await.unwrap().unwrap();
    assert_eq!(
        (got.last_seen_ts, got.last_seen_ip.as_deref()),
        (Some(12345), Some("192.0.2.7"))
    );
    assert!(a.get_device(ALICE, "NOSUCH").await.unwrap().is_none());
}

async fn delete_device_removes_only_its_tokens(s: &Storage) {
    let a = s.accounts.as_ref();
    a.upsert_device(&device(ALICE, "PHONE", None))
        .await
        .unwrap();
    a.upsert_device(&device(ALICE, "LAPTOP", None))
        .await
        .unwrap();
    // Bob has a device with the same id: it belongs to him, not to Alice.
    a.upsert_device(&device(BOB, "PHONE", None)).await.unwrap();
    a.insert_token(&token(
        "alice_phone_1",
        Some("alice_phone_r"),
        ALICE,
        "PHONE",
    ))
    .await
    .unwrap();
    a.insert_token(&token("alice_phone_2", None, ALICE, "PHONE"))
        .await
        .unwrap();
    a.insert_token(&token("alice_laptop", None, ALICE, "LAPTOP"))
        .await
        .unwrap();
    a.insert_token(&token("bob_phone", None, BOB, "PHONE"))
        .await
        .unwrap();

    a.delete_device(ALICE, "PHONE").await.unwrap();

    assert!(a.get_device(ALICE, "PHONE").await.unwrap().is_none());
    assert!(a.get_token("alice_phone_1").await.unwrap().is_none());
    assert!(a.get_token("alice_phone_2").await.unwrap().is_none());
    let refreshed = a
        .rotate_refresh_token("alice_phone_r", &token("n", Some("n_r"), ALICE, "PHONE"))
        .await
        .unwrap();
    assert!(
        refreshed.is_none(),
        "the deleted device's refresh token is void"
    );
    assert_eq!(
        a.get_token("alice_laptop")
            .await
            .unwrap()
            .unwrap()
            .device_id,
        "LAPTOP"
    );
    assert_eq!(
        a.get_token("bob_phone").await.unwrap().unwrap().user_id,
        BOB
    );
    assert!(a.get_device(BOB, "PHONE").await.unwrap().is_some());
    let left: Vec<_> = a
        .list_devices(ALICE)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(left, ["LAPTOP"]);

    // Deleting a device that does not exist is not an error.
    a.delete_device(ALICE, "NOSUCH").await.unwrap();
}

async fn access_tokens(s: &Storage) {
    let a = s.accounts.as_ref();
    let mut expiring = token("tok_expiring", Some("ref_1"), ALICE, "PHONE");
    expiring.expires_ts = Some(1_700_000_300_000);
    a.insert_token(&expiring).await.unwrap();
    a.insert_token(&token("tok_forever", None, ALICE, "LAPTOP"))
        .await
        .unwrap();
    a.insert_token(&token("tok_bob", None, BOB, "BOBDEV"))
        .await
        .unwrap();

    let got = a
        .get_token("tok_expiring")
        .await
        .unwrap()
        .expect("token is known");
    assert_eq!(
        (got.user_id.as_str(), got.device_id.as_str()),
        (ALICE, "PHONE")
    );
    assert_eq!(got.expires_ts, Some(1_700_000_300_000));
    assert_eq!(
        a.get_token("tok_forever")
            .await
            .unwrap()
            .unwrap()
            .expires_ts,
        None
    );
    assert!(a.get_token("tok_unknown").await.unwrap().is_none());

    // Access tokens are unique: a second insert of the same token fails.
    assert!(a
        .insert_token(&token("tok_forever", None, BOB, "BOBDEV"))
        .await
        .is_err());
    assert_eq!(
        a.get_token("tok_forever").await.unwrap().unwrap().user_id,
        ALICE,
        "the original owner is kept"
    );

    a.delete_token("tok_expiring").await.unwrap();
    assert!(
        a.get_token("tok_expiring").await.unwrap().is_none(),
        "logged out"
    );
    assert!(
        a.get_token("tok_forever").await.unwrap().is_some(),
        "the other session is untouched"
    );

    a.insert_token(&token("tok_alice_2", None, ALICE, "PHONE"))
        .await
        .unwrap();
    a.delete_user_tokens(ALICE).await.unwrap();
    assert!(
        a.get_token("tok_forever").await.unwrap().is_none(),
        "logged out everywhere"
    );
    assert!(
        a.get_token("tok_alice_2").await.unwrap().is_none(),
        "logged out everywhere"
    );
    assert!(
        a.get_token("tok_bob").await.unwrap().is_some(),
        "other users are untouched"
    );
}

async fn refresh_token_is_single_use(s: &Storage) {
    let a = s.accounts.as_ref();
    a.insert_token(&token("access_1", Some("refresh_1"), ALICE, "PHONE"))
        .await
        .unwrap();

    let mut next = token("access_2", Some("refresh_2"), "ignored", "ignored");
    next.expires_ts = Some(1_700_000_600_000);
    let owner = a
        .rotate_refresh_token("refresh_1", &next)
        .await
        .unwrap()
        .expect("refresh token is valid");
    assert_eq!(
        (owner.user_id.as_str(), owner.device_id.as_str()),
        (ALICE, "PHONE")
    );
    assert_eq!(owner.expires_ts, Some(1_700_000_600_000));

    assert!(
        a.get_token("access_1").await.unwrap().is_none(),
        "the old access token is retired"
    );
    let new = a
        .get_token("access_2")
        .await
        .unwrap()
        .expect("the new access token works");
    assert_eq!(
        (new.user_id.as_str(), new.device_id.as_str()),
        (ALICE, "PHONE"),
        "the session keeps its owner"
    );
    assert_eq!(new.expires_ts, Some(1_700_000_600_000));

    // Replaying the used refresh token gets nothing and mints nothing.
    let replay = a
        .rotate_refresh_token(
            "refresh_1",
            &token("access_3", Some("refresh_3"), ALICE, "PHONE"),
        )
        .await
        .unwrap();
    assert!(replay.is_none(), "a refresh token is single-use");
    assert!(a.get_token("access_3").await.unwrap().is_none());
    assert!(
        a.get_token("access_2").await.unwrap().is_some(),
        "a replay does not log the session out"
    );

    // The new refresh token works once.
    let owner = a
        .rotate_refresh_token("refresh_2", &token("access_4", None, "x", "x"))
        .await
        .unwrap();
    assert_eq!(owner.map(|o| o.user_id).as_deref(), Some(ALICE));
    assert!(a.get_token("access_4").await.unwrap().is_some());
    assert!(a
        .rotate_refresh_token("unknown", &token("access_5", None, ALICE, "PHONE"))
        .await
        .unwrap()
        .is_none());
    assert!(a.get_token("access_5").await.unwrap().is_none());
}

/// Two clients racing with the same refresh token (or one client retrying
/// while its first request is in flight): only one may get a new session.
async fn refresh_token_is_single_use_under_concurrency(s: &Storage) {
    let a = s.accounts.as_ref();
    for round in 0..10 {
        let (old, refresh) = (format!("old_{round}"), format!("refresh_{round}"));
        a.insert_token(&token(&old, Some(&refresh), ALICE, "PHONE"))
            .await
            .unwrap();
        let (first_access, first_refresh) = (format!("first_{round}"), format!("first_r_{round}"));
        let (second_access, second_refresh) =
            (format!("second_{round}"), format!("second_r_{round}"));
        let first = token(&first_access, Some(&first_refresh), ALICE, "PHONE");
        let second = token(&second_access, Some(&second_refresh), ALICE, "PHONE");
        let (r1, r2) = tokio::join!(
            a.rotate_refresh_token(&refresh, &first),
            a.rotate_refresh_token(&refresh, &second)
        );
        let winners = [r1, r2]
            .into_iter()
            .filter(|r| matches!(r, Ok(Some(_))))
            .count();
        assert_eq!(
            winners, 1,
            "round {round}: exactly one rotation of the same refresh token succeeds"
        );
        let live = [&first_access, &second_access];
        let mut minted = 0;
        for access in live {
            minted += a.get_token(access).await.unwrap().is_some() as usize;
        }
        assert_eq!(
            minted, 1,
            "round {round}: exactly one new access token exists"
        );
    }

    // The same holds for a registration token with one use left.
    a.create_registration_token("one_use", Some(1), None)
        .await
        .unwrap();
    let (u1, u2) = tokio::join!(
        a.use_registration_token("one_use", 0),
        a.use_registration_token("one_use", 0)
    );
    assert_eq!(
        [u1.unwrap(), u2.unwrap()]
            .iter()
            .filter(|used| **used)
            .count(),
        1,
        "one use, one registration"
    );
}

async fn filters(s: &Storage) {
    let a = s.accounts.as_ref();
    let filter = r#"{"room":{"timeline":{"limit":10}}}"#;
    a.create_filter(ALICE, "0", filter).await.unwrap();
    a.create_filter(BOB, "0", r#"{"presence":{"not_types":["*"]}}"#)
        .await
        .unwrap();
    assert_eq!(
        a.get_filter(ALICE, "0").await.unwrap().as_deref(),
        Some(filter)
    );
    assert_eq!(
        a.get_filter(BOB, "0").await.unwrap().as_deref(),
        Some(r#"{"presence":{"not_types":["*"]}}"#),
        "filter ids are per user"
    );
    assert!(a.get_filter(ALICE, "1").await.unwrap().is_none());
    assert!(
        a.get_filter("@carol:example.org", "0")
            .await
            .unwrap()
            .is_none(),
        "one user cannot read another's filter"
    );
}

async fn registration_tokens(s: &Storage) {
    let a = s.accounts.as_ref();
    assert!(a
        .create_registration_token("twice", Some(2), None)
        .await
        .unwrap());
    assert!(
        !a.create_registration_token("twice", Some(100), None)
            .await
            .unwrap(),
        "token names are unique"
    );

    assert!(a.registration_token_valid("twice", 0).await.unwrap());
    assert!(
        a.registration_token_valid("twice", 0).await.unwrap(),
        "checking validity does not use the token"
    );
    assert!(a.use_registration_token("twice", 0).await.unwrap());
    assert!(a.registration_token_valid("twice", 0).await.unwrap());
    assert!(a.use_registration_token("twice", 0).await.unwrap());
    assert!(
        !a.registration_token_valid("twice", 0).await.unwrap(),
        "uses_allowed is exhausted"
    );
    assert!(
        !a.use_registration_token("twice", 0).await.unwrap(),
        "no third registration"
    );

    a.create_registration_token("unlimited", None, None)
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(a
            .use_registration_token("unlimited", i64::MAX - 1)
            .await
            .unwrap());
    }

    a.create_registration_token("expiring", None, Some(1_000))
        .await
        .unwrap();
    assert!(a.registration_token_valid("expiring", 999).await.unwrap());
    assert!(a.use_registration_token("expiring", 999).await.unwrap());
    assert!(
        !a.registration_token_valid("expiring", 1_000).await.unwrap(),
        "expired at expiry_ts"
    );
    assert!(!a.use_registration_token("expiring", 1_001).await.unwrap());

    assert!(!a.registration_token_valid("unknown", 0).await.unwrap());
    assert!(!a.use_registration_token("unknown", 0).await.unwrap());
}

// ---------------------------------------------------------------------------
// Rooms and the timeline

async fn rooms(s: &Storage) {
    let r = s.rooms.as_ref();
    r.create_room(&room("!b:example.org", true)).await.unwrap();
    r.create_room(&room("!a:example.org", true)).await.unwrap();
    r.create_room(&room("!private:example.org", false))
        .await
        .unwrap();

    let got = r
        .get_room("!private:example.org")
        .await
        .unwrap()
        .expect("room exists");
    assert_eq!(got.room_id, "!private:example.org");
    assert_eq!(got.room_version, "11");
    assert_eq!(got.creator, ALICE);
    assert!(!got.is_public);
    assert!(r.get_room("!nosuch:example.org").await.unwrap().is_none());
    assert!(
        r.create_room(&room("!a:example.org", false)).await.is_err(),
        "room ids are unique"
    );
    assert!(
        r.get_room("!a:example.org")
            .await
            .unwrap()
            .unwrap()
            .is_public,
        "a failed create changes nothing"
    );

    assert_eq!(
        r.public_rooms().await.unwrap(),
        ["!a:example.org", "!b:example.org"]
    );
    r.set_room_public("!a:example.org", false).await.unwrap();
    r.set_room_public("!private:example.org", true)
        .await
        .unwrap();
    assert_eq!(
        r.public_rooms().await.unwrap(),
        ["!b:example.org", "!private:example.org"]
    );
    assert!(
        r.get_room("!private:example.org")
            .await
            .unwrap()
            .unwrap()
            .is_public
    );

    // A new room has no state yet.
    assert_eq!(r.current_snapshot("!a:example.org").await.unwrap(), 0);
    assert!(r.current_state("!a:example.org").await.unwrap().is_empty());
    assert!(r
        .forward_extremities("!a:example.org")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(r.current_snapshot("!nosuch:example.org").await.unwrap(), 0);
}

async fn state_events_update_current_state_and_memberships(s: &Storage) {
    let (r, t) = (s.rooms.as_ref(), s.timeline.as_ref());
    assert_eq!(r.max_snapshot_id().await.unwrap(), 0);
    create_room_with_alice(s, ROOM, 1, 1).await;

    assert_eq!(
        sorted(r.current_state(ROOM).await.unwrap()),
        [
            triple("m.room.create", "", "$create1"),
            triple("m.room.member", ALICE, "$join2")
        ]
    );
    assert_eq!(r.current_snapshot(ROOM).await.unwrap(), 2);
    assert_eq!(r.max_snapshot_id().await.unwrap(), 2);
    assert_eq!(
        r.forward_extremities(ROOM).await.unwrap(),
        ["$join2"],
        "the new event replaces the extremities"
    );

    let name = Ev::new(
        ROOM,
        3,
        "$name3",
        ALICE,
        "m.room.name",
        json!({ "name": "Tea party" }),
    )
    .state("", (3, 2));
    t.persist_event(&name.build()).await.unwrap();
    let msg = Ev::message(ROOM, 4, "$msg4", ALICE, "hello").before(3);
    t.persist_event(&msg.build()).await.unwrap();
    assert_eq!(
        r.current_snapshot(ROOM).await.unwrap(),
        3,
        "a message does not change the state"
    );
    assert_eq!(r.forward_extremities(ROOM).await.unwrap(), ["$msg4"]);

    let stored = t.get_event("$msg4").await.unwrap().expect("event stored");
    assert_eq!(stored.stream_pos, 4);
    assert_eq!(stored.room_id, ROOM);
    assert_eq!(stored.state_before, 3);
    assert!(!stored.rejected);
    assert_eq!(stored.txn, None);
    assert_eq!(pdu(&stored.pdu_json)["content"]["body"], "hello");
    assert!(t.get_event("$nosuch").await.unwrap().is_none());

    // Bob is invited, joins; the name changes.
    let invite = Ev::member(ROOM, 5, "$invite5", BOB, "invite", (4, 3)).sent_by(ALICE);
    t.persist_event(&invite.build()).await.unwrap();
    assert_eq!(rooms_of(s, BOB).await, pairs(&[(ROOM, "invite")]));

    t.persist_event(&Ev::member(ROOM, 6, "$join6", BOB, "join", (5, 4)).build())
        .await
        .unwrap();
    let rename = Ev::new(
        ROOM,
        7,
        "$name7",
        BOB,
        "m.room.name",
        json!({ "name": "Mad tea party" }),
    )
    .state("", (6, 5));
    t.persist_event(&rename.extremities(&["$name7", "$side"]).build())
        .await
        .unwrap();

    assert_eq!(
        sorted(r.current_state(ROOM).await.unwrap()),
        [
            triple("m.room.create", "", "$create1"),
            triple("m.room.member", ALICE, "$join2"),
            triple("m.room.member", BOB, "$join6"),
            triple("m.room.name", "", "$name7"),
        ],
        "the latest event of each (type, state key) is current"
    );
    assert_eq!(r.current_snapshot(ROOM).await.unwrap(), 6);
    let mut extremities = r.forward_extremities(ROOM).await.unwrap();
    extremities.sort();
    assert_eq!(extremities, ["$name7", "$side"]);

    let bob = r.memberships_for_user(BOB).await.unwrap();
    assert_eq!(
        bob,
        [MembershipRecord {
            room_id: ROOM.to_owned(),
            user_id: BOB.to_owned(),
            membership: "join".to_owned(),
            event_id: "$join6".to_owned(),
            stream_pos: 6,
        }]
    );
    assert_eq!(
        sorted_members(s, ROOM).await,
        pairs(&[(ALICE, "join"), (BOB, "join")])
    );

    // Alice leaves; her membership follows, in this room only.
    create_room_with_alice(s, OTHER_ROOM, 8, 7).await;
    t.persist_event(&Ev::member(ROOM, 10, "$leave10", ALICE, "leave", (9, 6)).build())
        .await
        .unwrap();
    assert_eq!(
        rooms_of(s, ALICE).await,
        pairs(&[(OTHER_ROOM, "join"), (ROOM, "leave")])
    );
    let leave = r
        .memberships_for_user(ALICE)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.room_id == ROOM)
        .unwrap();
    assert_eq!(
        (leave.event_id.as_str(), leave.stream_pos),
        ("$leave10", 10)
    );
    assert_eq!(
        sorted_members(s, ROOM).await,
        pairs(&[(ALICE, "leave"), (BOB, "join")])
    );
    assert_eq!(
        sorted_members(s, OTHER_ROOM).await,
        pairs(&[(ALICE, "join")])
    );
    assert!(r.members("!nosuch:example.org").await.unwrap().is_empty());
    assert_eq!(r.max_snapshot_id().await.unwrap(), 9);

    // Each room keeps its own state.
    assert_eq!(
        sorted(r.current_state(OTHER_ROOM).await.unwrap()),
        [
            triple("m.room.create", "", "$create8"),
            triple("m.room.member", ALICE, "$join9")
        ]
    );
}

async fn snapshot_chain_resolves_nearest_entry(s: &Storage) {
    let (r, t) = (s.rooms.as_ref(), s.timeline.as_ref());
    create_room_with_alice(s, ROOM, 1, 1).await; // snapshots 1 (create) and 2 (join)
    let name = |pos: i64, id: &str, text: &str, snapshot| {
        Ev::new(ROOM, pos, id, ALICE, "m.room.name", json!({ "name": text }))
            .state("", snapshot)
            .build()
    };
    t.persist_event(&name(3, "$name3", "first", (3, 2)))
        .await
        .unwrap();
    let topic = Ev::new(
        ROOM,
        4,
        "$topic4",
        ALICE,
        "m.room.topic",
        json!({ "topic": "t" }),
    )
    .state("", (4, 3));
    t.persist_event(&topic.build()).await.unwrap();
    t.persist_event(
        &Ev::message(ROOM, 5, "$msg5", ALICE, "between")
            .before(4)
            .build(),
    )
    .await
    .unwrap();
    t.persist_event(&name(6, "$name6", "second", (5, 4)))
        .await
        .unwrap();

    let base = [
        triple("m.room.create", "", "$create1"),
        triple("m.room.member", ALICE, "$join2"),
    ];
    let with = |extra: &[(String, String, String)]| {
        let mut all: Vec<_> = base.iter().chain(extra).cloned().collect();
        all.sort();
        all
    };
    assert_eq!(
        sorted(r.snapshot_state(1).await.unwrap()),
        [triple("m.room.create", "", "$create1")]
    );
    assert_eq!(sorted(r.snapshot_state(2).await.unwrap()), with(&[]));
    assert_eq!(
        sorted(r.snapshot_state(3).await.unwrap()),
        with(&[triple("m.room.name", "", "$name3")])
    );
    assert_eq!(
        sorted(r.snapshot_state(5).await.unwrap()),
        with(&[
            triple("m.room.name", "", "$name6"),
            triple("m.room.topic", "", "$topic4")
        ]),
        "the nearest entry for a key wins over its ancestors'"
    );

    // The state a message was sent in is still readable after the state moved on.
    let msg = t.get_event("$msg5").await.unwrap().unwrap();
    assert_eq!(
        sorted(r.snapshot_state(msg.state_before).await.unwrap()),
        with(&[
            triple("m.room.name", "", "$name3"),
            triple("m.room.topic", "", "$topic4")
        ])
    );

    // A fork from snapshot 3 sees its own branch, not its sibling's.
    let fork = name(7, "$name7", "fork", (6, 3));
    t.persist_event(&fork).await.unwrap();
    assert_eq!(
        sorted(r.snapshot_state(6).await.unwrap()),
        with(&[triple("m.room.name", "", "$name7")])
    );
    assert_eq!(
        sorted(r.snapshot_state(5).await.unwrap()),
        with(&[
            triple("m.room.name", "", "$name6"),
            triple("m.room.topic", "", "$topic4")
        ]),
        "a fork leaves its sibling's state unchanged"
    );
    assert!(
        r.snapshot_state(0).await.unwrap().is_empty(),
        "snapshot 0 is the empty state"
    );
    assert!(r.snapshot_state(999).await.unwrap().is_empty());
    assert_eq!(r.max_snapshot_id().await.unwrap(), 6);
}

async fn transaction_ids(s: &Storage) {
    let t = s.timeline.as_ref();
    create_room_with_alice(s, ROOM, 1, 1).await;
    // Transactions are keyed by user, device and a key naming the endpoint and
    // the client's txn id; the bare txn id is kept for `unsigned.transaction_id`.
    let send_key = "send/!room:example.org/m.room.message|txn1";
    let state_key = "state/!room:example.org/m.room.topic/|txn1";
    let msg = Ev::message(ROOM, 3, "$msg3", ALICE, "hi").before(2);
    t.persist_event(&msg.txn("PHONE", send_key, "txn1").build())
        .await
        .unwrap();
    let plain = Ev::message(ROOM, 4, "$msg4", ALICE, "no txn").before(2);
    t.persist_event(&plain.build()).await.unwrap();

    let found = t.find_txn(ALICE, "PHONE", send_key).await.unwrap();
    assert_eq!(
        found.as_deref(),
        Some("$msg3"),
        "a retried send is recognised"
    );
    let found = t.find_txn(ALICE, "LAPTOP", send_key).await.unwrap();
    assert!(found.is_none(), "txn ids are per device");
    let found = t.find_txn(BOB, "PHONE", send_key).await.unwrap();
    assert!(found.is_none(), "txn ids are per user");
    let found = t.find_txn(ALICE, "PHONE", state_key).await.unwrap();
    assert!(found.is_none(), "txn ids are per endpoint");

    let stored = t.get_event("$msg3").await.unwrap().unwrap();
    let expected = Some(("PHONE".to_owned(), "txn1".to_owned()));
    assert_eq!(
        stored.txn, expected,
        "the client's own txn id, for unsigned.transaction_id"
    );
    assert_eq!(t.get_event("$msg4").await.unwrap().unwrap().txn, None);

    // The same txn id on another endpoint, or from another device, is another request.
    let topic = Ev::new(
        ROOM,
        5,
        "$topic5",
        ALICE,
        "m.room.topic",
        json!({ "topic": "t" }),
    )
    .state("", (3, 2))
    .txn("PHONE", state_key, "txn1");
    t.persist_event(&topic.build()).await.unwrap();
    let laptop = Ev::message(ROOM, 6, "$msg6", ALICE, "hi").before(3);
    t.persist_event(&laptop.txn("LAPTOP", send_key, "txn1").build())
        .await
        .unwrap();
    let found = t.find_txn(ALICE, "PHONE", state_key).await.unwrap();
    assert_eq!(found.as_deref(), Some("$topic5"));
    let found = t.find_txn(ALICE, "LAPTOP", send_key).await.unwrap();
    assert_eq!(found.as_deref(), Some("$msg6"));
    let found = t.find_txn(ALICE, "PHONE", send_key).await.unwrap();
    assert_eq!(
        found.as_deref(),
        Some("$msg3"),
        "the first transaction is unchanged"
    );
    let topic = t.get_event("$topic5").await.unwrap().unwrap();
    assert_eq!(topic.txn, expected);
}

async fn redaction_rewrites_target(s: &Storage) {
    let t = s.timeline.as_ref();
    create_room_with_alice(s, ROOM, 1, 1).await;
    create_room_with_alice(s, OTHER_ROOM, 3, 3).await;
    t.persist_event(
        &Ev::message(ROOM, 5, "$secret", ALICE, "my password is hunter2")
            .before(2)
            .build(),
    )
    .await
    .unwrap();
    t.persist_event(
        &Ev::message(OTHER_ROOM, 6, "$elsewhere", ALICE, "keep me")
            .before(4)
            .build(),
    )
    .await
    .unwrap();
    let original = t.get_event("$secret").await.unwrap().unwrap().pdu_json;

    let redacted = json!({
        "event_id": "$secret", "room_id": ROOM, "type": "m.room.message", "sender": ALICE, "content": {},
    })
    .to_string();
    let redaction = Ev::new(ROOM, 7, "$redact7", ALICE, "m.room.redaction", json!({}))
        .before(2)
        .redacts("$secret", &redacted);
    t.persist_event(&redaction.build()).await.unwrap();

    let target = t.get_event("$secret").await.unwrap().unwrap();
    assert_ne!(target.pdu_json, original);
    assert_eq!(
        target.pdu_json, redacted,
        "the stored PDU is replaced by its redacted form"
    );
    assert!(!target.pdu_json.contains("hunter2"));
    assert_eq!(
        target.stream_pos, 5,
        "the redacted event keeps its place in the timeline"
    );
    let timeline = t
        .room_events(ROOM, 0, 100, Direction::Forward, 100)
        .await
        .unwrap();
    let in_timeline = timeline.iter().find(|e| e.event_id == "$secret").unwrap();
    assert!(
        !in_timeline.pdu_json.contains("hunter2"),
        "timeline reads see the redaction"
    );
    let redaction = t
        .get_event("$redact7")
        .await
        .unwrap()
        .expect("the redaction itself is stored");
    assert_eq!(pdu(&redaction.pdu_json)["redacts"], "$secret");

    // A redaction only reaches events of its own room.
    let cross = Ev::new(ROOM, 8, "$redact8", ALICE, "m.room.redaction", json!({}))
        .before(2)
        .redacts("$elsewhere", "{}");
    t.persist_event(&cross.build()).await.unwrap();
    let elsewhere = t.get_event("$elsewhere").await.unwrap().unwrap();
    assert_eq!(pdu(&elsewhere.pdu_json)["content"]["body"], "keep me");
}

async fn room_events_ranges(s: &Storage) {
    let t = s.timeline.as_ref();
    create_room_with_alice(s, ROOM, 1, 1).await; // positions 1, 2
    create_room_with_alice(s, OTHER_ROOM, 3, 3).await; // positions 3, 4
                                                       // Messages 5..=14, alternating rooms: ROOM has the odd positions.
    for pos in 5..=14 {
        let (room_id, state) = if pos % 2 == 1 {
            (ROOM, 2)
        } else {
            (OTHER_ROOM, 4)
        };
        t.persist_event(
            &Ev::message(room_id, pos, &format!("$m{pos}"), ALICE, &format!("#{pos}"))
                .before(state)
                .build(),
        )
        .await
        .unwrap();
    }

    let all = t
        .room_events(ROOM, 0, 100, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(
        ids(&all),
        ["$create1", "$join2", "$m5", "$m7", "$m9", "$m11", "$m13"],
        "oldest first, own room only"
    );
    assert!(all.windows(2).all(|w| w[0].stream_pos < w[1].stream_pos));
    assert_eq!(
        pdu(&all[3].pdu_json)["content"]["body"],
        "#7",
        "the same body reads back"
    );

    // Forward: from < pos <= to.
    let page = t
        .room_events(ROOM, 5, 11, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["$m7", "$m9", "$m11"]);
    let page = t
        .room_events(ROOM, 5, 100, Direction::Forward, 2)
        .await
        .unwrap();
    assert_eq!(
        ids(&page),
        ["$m7", "$m9"],
        "the limit keeps the oldest events after `from`"
    );
    let page = t
        .room_events(ROOM, 6, 8, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(
        ids(&page),
        ["$m7"],
        "bounds need not be positions of this room"
    );
    assert!(t
        .room_events(ROOM, 13, 100, Direction::Forward, 100)
        .await
        .unwrap()
        .is_empty());

    // Backward: to < pos <= from, newest first.
    let page = t
        .room_events(ROOM, 11, 5, Direction::Backward, 100)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["$m11", "$m9", "$m7"]);
    let page = t
        .room_events(ROOM, 100, 0, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(
        ids(&page),
        ["$m13", "$m11", "$m9"],
        "the limit keeps the newest events"
    );
    let next = t
        .room_events(ROOM, page[2].stream_pos - 1, 0, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(
        ids(&next),
        ["$m7", "$m5", "$join2"],
        "paginating on from the last position continues seamlessly"
    );
    let page = t
        .room_events(ROOM, 12, 0, Direction::Backward, 1)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["$m11"]);
    assert!(t
        .room_events(ROOM, 1, 1, Direction::Backward, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(t
        .room_events("!nosuch:example.org", 0, 100, Direction::Forward, 10)
        .await
        .unwrap()
        .is_empty());

    assert_eq!(t.room_max_pos(ROOM).await.unwrap(), 13);
    assert_eq!(t.room_max_pos(OTHER_ROOM).await.unwrap(), 14);
    assert_eq!(t.room_max_pos("!nosuch:example.org").await.unwrap(), 0);
    assert_eq!(t.max_stream_pos().await.unwrap(), 14);
    // Account data shares the stream.
    s.account_data
        .put_account_data(ALICE, None, "m.push_rules", "{}", 20)
        .await
        .unwrap();
    assert_eq!(t.max_stream_pos().await.unwrap(), 20);
    assert_eq!(t.room_max_pos(ROOM).await.unwrap(), 13);
}

async fn state_key_history_oldest_first(s: &Storage) {
    let t = s.timeline.as_ref();
    create_room_with_alice(s, ROOM, 1, 1).await;
    let visibility = |pos: i64, value: &str, snapshot| {
        Ev::new(
            ROOM,
            pos,
            &format!("$hv{pos}"),
            ALICE,
            "m.room.history_visibility",
            json!({ "history_visibility": value }),
        )
        .state("", snapshot)
        .build()
    };
    t.persist_event(&visibility(3, "shared", (3, 2)))
        .await
        .unwrap();
    t.persist_event(&Ev::message(ROOM, 4, "$m4", ALICE, "x").before(3).build())
        .await
        .unwrap();
    t.persist_event(&visibility(5, "joined", (4, 3)))
        .await
        .unwrap();
    t.persist_event(&Ev::member(ROOM, 6, "$join6", BOB, "join", (5, 4)).build())
        .await
        .unwrap();
    t.persist_event(&visibility(7, "invited", (6, 5)))
        .await
        .unwrap();

    let history = t
        .state_key_history(ROOM, "m.room.history_visibility", "")
        .await
        .unwrap();
    let got: Vec<_> = history
        .iter()
        .map(|(pos, json)| {
            (
                *pos,
                pdu(json)["content"]["history_visibility"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (3, "shared".to_owned()),
            (5, "joined".to_owned()),
            (7, "invited".to_owned())
        ]
    );

    let bob = t
        .state_key_history(ROOM, "m.room.member", BOB)
        .await
        .unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].0, 6);
    assert!(t
        .state_key_history(ROOM, "m.room.member", "@carol:example.org")
        .await
        .unwrap()
        .is_empty());
    assert!(t
        .state_key_history(OTHER_ROOM, "m.room.history_visibility", "")
        .await
        .unwrap()
        .is_empty());
}

async fn current_state_events(s: &Storage) {
    let (r, t) = (s.rooms.as_ref(), s.timeline.as_ref());
    create_room_with_alice(s, ROOM, 1, 1).await;
    create_room_with_alice(s, OTHER_ROOM, 3, 3).await;
    let topic = |pos: i64, text: &str, snapshot| {
        Ev::new(
            ROOM,
            pos,
            &format!("$topic{pos}"),
            ALICE,
            "m.room.topic",
            json!({ "topic": text }),
        )
        .state("", snapshot)
        .build()
    };
    t.persist_event(&topic(5, "old", (5, 2))).await.unwrap();
    t.persist_event(&Ev::message(ROOM, 6, "$m6", ALICE, "x").before(5).build())
        .await
        .unwrap();
    t.persist_event(&topic(7, "new", (6, 5))).await.unwrap();

    let mut events = t.current_state_events(ROOM).await.unwrap();
    events.sort_by_key(|e| e.stream_pos);
    assert_eq!(ids(&events), ["$create1", "$join2", "$topic7"]);
    assert_eq!(
        pdu(&events[2].pdu_json)["content"]["topic"],
        "new",
        "only the current topic"
    );
    assert!(events.iter().all(|e| e.room_id == ROOM));
    let mut expected: Vec<_> = r
        .current_state(ROOM)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, id)| id)
        .collect();
    expected.sort();
    let mut got: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
    got.sort();
    assert_eq!(got, expected, "the same events as current_state");
    assert!(t
        .current_state_events("!nosuch:example.org")
        .await
        .unwrap()
        .is_empty());
}

async fn aliases(s: &Storage) {
    let r = s.rooms.as_ref();
    r.create_room(&room(ROOM, false)).await.unwrap();
    r.create_room(&room(OTHER_ROOM, false)).await.unwrap();
    assert!(r.set_alias("#tea:example.org", ROOM, ALICE).await.unwrap());
    assert!(r.set_alias("#party:example.org", ROOM, BOB).await.unwrap());
    assert!(
        !r.set_alias("#tea:example.org", OTHER_ROOM, BOB)
            .await
            .unwrap(),
        "an alias is taken once"
    );
    assert_eq!(
        r.get_alias("#tea:example.org").await.unwrap(),
        Some((ROOM.to_owned(), ALICE.to_owned())),
        "a refused alias keeps pointing where it did"
    );
    assert_eq!(
        r.get_alias("#party:example.org").await.unwrap(),
        Some((ROOM.to_owned(), BOB.to_owned()))
    );
    assert!(r.get_alias("#nosuch:example.org").await.unwrap().is_none());
    assert_eq!(
        r.aliases_for_room(ROOM).await.unwrap(),
        ["#party:example.org", "#tea:example.org"]
    );
    assert!(r.aliases_for_room(OTHER_ROOM).await.unwrap().is_empty());

    assert!(r.delete_alias("#tea:example.org").await.unwrap());
    assert!(
        !r.delete_alias("#tea:example.org").await.unwrap(),
        "deleting twice"
    );
    assert!(r.get_alias("#tea:example.org").await.unwrap().is_none());
    assert_eq!(
        r.aliases_for_room(ROOM).await.unwrap(),
        ["#party:example.org"]
    );
    assert!(
        r.set_alias("#tea:example.org", OTHER_ROOM, BOB)
            .await
            .unwrap(),
        "a deleted alias can be reused"
    );
    assert_eq!(
        r.get_alias("#tea:example.org").await.unwrap(),
        Some((OTHER_ROOM.to_owned(), BOB.to_owned()))
    );
}

async fn forget_room(s: &Storage) {
    let (r, t) = (s.rooms.as_ref(), s.timeline.as_ref());
    create_room_with_alice(s, ROOM, 1, 1).await;
    create_room_with_alice(s, OTHER_ROOM, 3, 3).await;
    t.persist_event(&Ev::member(ROOM, 5, "$bob5", BOB, "join", (5, 2)).build())
        .await
        .unwrap();
    t.persist_event(&Ev::member(ROOM, 6, "$leave6", ALICE, "leave", (6, 5)).build())
        .await
        .unwrap();

    // Forgetting a room one is still in does nothing.
    r.forget_room(ALICE, OTHER_ROOM).await.unwrap();
    assert_eq!(
        rooms_of(s, ALICE).await,
        pairs(&[(OTHER_ROOM, "join"), (ROOM, "leave")])
    );

    r.forget_room(ALICE, ROOM).await.unwrap();
    assert_eq!(
        rooms_of(s, ALICE).await,
        pairs(&[(OTHER_ROOM, "join")]),
        "the forgotten room is gone"
    );
    assert_eq!(
        rooms_of(s, BOB).await,
        pairs(&[(ROOM, "join")]),
        "others' memberships are untouched"
    );
    assert_eq!(
        sorted_members(s, ROOM).await,
        pairs(&[(ALICE, "leave"), (BOB, "join")]),
        "the room's own member list still shows that she left"
    );

    // Joining again brings the room back.
    t.persist_event(&Ev::member(ROOM, 7, "$join7", ALICE, "join", (7, 6)).build())
        .await
        .unwrap();
    assert_eq!(
        rooms_of(s, ALICE).await,
        pairs(&[(OTHER_ROOM, "join"), (ROOM, "join")])
    );

    // A banned user may forget the room too.
    let ban = Ev::member(ROOM, 8, "$ban8", BOB, "ban", (8, 7)).sent_by(ALICE);
    t.persist_event(&ban.build()).await.unwrap();
    assert_eq!(rooms_of(s, BOB).await, pairs(&[(ROOM, "ban")]));
    r.forget_room(BOB, ROOM).await.unwrap();
    assert!(rooms_of(s, BOB).await.is_empty());
}

async fn account_data(s: &Storage) {
    let d = s.account_data.as_ref();
    d.put_account_data(
        ALICE,
        None,
        "m.direct",
        r#"{"@bob:example.org":["!dm:example.org"]}"#,
        1,
    )
    .await
    .unwrap();
    d.put_account_data(ALICE, Some(ROOM), "m.tag", r#"{"tags":{"u.work":{}}}"#, 2)
        .await
        .unwrap();
    d.put_account_data(ALICE, Some(ROOM), "m.direct", r#"{"room":true}"#, 3)
        .await
        .unwrap();
    d.put_account_data(BOB, None, "m.direct", r#"{"bob":true}"#, 4)
        .await
        .unwrap();

    assert_eq!(
        d.get_account_data(ALICE, None, "m.direct")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"@bob:example.org":["!dm:example.org"]}"#)
    );
    assert_eq!(
        d.get_account_data(ALICE, Some(ROOM), "m.direct")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"room":true}"#),
        "room data is separate from global data"
    );
    assert_eq!(
        d.get_account_data(ALICE, Some(ROOM), "m.tag")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"tags":{"u.work":{}}}"#)
    );
    assert!(
        d.get_account_data(ALICE, None, "m.tag")
            .await
            .unwrap()
            .is_none(),
        "room data is not global data"
    );
    assert!(d
        .get_account_data(ALICE, Some(OTHER_ROOM), "m.tag")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        d.get_account_data(BOB, None, "m.direct")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"bob":true}"#)
    );

    let since = |from, to| async move {
        d.account_data_since(ALICE, from, to)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.room_id, r.event_type, r.stream_pos))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        since(0, 10).await,
        [
            (None, "m.direct".to_owned(), 1),
            (Some(ROOM.to_owned()), "m.tag".to_owned(), 2),
            (Some(ROOM.to_owned()), "m.direct".to_owned(), 3),
        ],
        "in stream order, own data only"
    );
    assert_eq!(
        since(1, 2).await,
        [(Some(ROOM.to_owned()), "m.tag".to_owned(), 2)],
        "since < pos <= upto"
    );
    assert!(since(3, 10).await.is_empty());

    // Overwriting moves the entry to its new position, once.
    d.put_account_data(ALICE, None, "m.direct", r#"{"updated":true}"#, 5)
        .await
        .unwrap();
    assert_eq!(
        d.get_account_data(ALICE, None, "m.direct")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"updated":true}"#)
    );
    let changes = d.account_data_since(ALICE, 3, 5).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            changes[0].room_id.as_deref(),
            changes[0].event_type.as_str()
        ),
        (None, "m.direct")
    );
    assert_eq!(
        (changes[0].content.as_str(), changes[0].stream_pos),
        (r#"{"updated":true}"#, 5)
    );
    assert_eq!(
        since(0, 10).await.len(),
        3,
        "an update does not duplicate the entry"
    );
    assert_eq!(
        since(0, 4).await,
        [
            (Some(ROOM.to_owned()), "m.tag".to_owned(), 2),
            (Some(ROOM.to_owned()), "m.direct".to_owned(), 3)
        ],
        "the global entry left its old position"
    );
    assert!(d
        .account_data_since("@carol:example.org", 0, 100)
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------
// Atomicity

/// What a user could observe of a room; must be unchanged by a failed write.
#[derive(Debug, PartialEq)]
struct RoomView {
    state: Vec<(String, String, String)>,
    snapshot: i64,
    max_snapshot: i64,
    extremities: Vec<String>,
    members: Vec<(String, String)>,
    timeline: Vec<(i64, String, String)>,
    max_pos: i64,
}

async fn room_view(s: &Storage, room_id: &str) -> RoomView {
    let mut extremities = s.rooms.forward_extremities(room_id).await.unwrap();
    extremities.sort();
    let timeline = s
        .timeline
        .room_events(room_id, 0, i64::MAX, Direction::Forward, 1000)
        .await
        .unwrap();
    RoomView {
        state: sorted(s.rooms.current_state(room_id).await.unwrap()),
        snapshot: s.rooms.current_snapshot(room_id).await.unwrap(),
        max_snapshot: s.rooms.max_snapshot_id().await.unwrap(),
        extremities,
        members: sorted_members(s, room_id).await,
        timeline: timeline
            .into_iter()
            .map(|e| (e.stream_pos, e.event_id, e.pdu_json))
            .collect(),
        max_pos: s.timeline.max_stream_pos().await.unwrap(),
    }
}

async fn failed_persist_writes_nothing(s: &Storage) {
    let t = s.timeline.as_ref();
    create_room_with_alice(s, ROOM, 1, 1).await;
    t.persist_event(
        &Ev::message(ROOM, 3, "$secret", ALICE, "hunter2")
            .before(2)
            .build(),
    )
    .await
    .unwrap();
    let before = room_view(s, ROOM).await;

    // 1. A duplicate event id, carrying a txn id, a membership and a redaction.
    let duplicate = Ev::member(ROOM, 4, "$join2", BOB, "join", (3, 2))
        .txn("PHONE", "key-dup", "txn-dup")
        .redacts("$secret", "{}");
    assert!(
        t.persist_event(&duplicate.build()).await.is_err(),
        "a duplicate event id is refused"
    );
    assert!(
        t.find_txn(BOB, "PHONE", "key-dup").await.unwrap().is_none(),
        "no txn id row is left behind"
    );
    assert!(
        s.rooms.memberships_for_user(BOB).await.unwrap().is_empty(),
        "no membership is left behind"
    );
    assert_eq!(room_view(s, ROOM).await, before, "the room is unchanged");
    let original = t.get_event("$join2").await.unwrap().unwrap();
    assert_eq!(
        (
            original.stream_pos,
            pdu(&original.pdu_json)["sender"].as_str()
        ),
        (2, Some(ALICE)),
        "the original event is intact"
    );

    // 2. A duplicate stream position.
    let same_pos = Ev::message(ROOM, 3, "$other3", ALICE, "x")
        .before(2)
        .txn("PHONE", "key-pos", "txn-pos");
    assert!(
        t.persist_event(&same_pos.build()).await.is_err(),
        "a duplicate stream position is refused"
    );
    assert!(t.get_event("$other3").await.unwrap().is_none());
    assert!(t
        .find_txn(ALICE, "PHONE", "key-pos")
        .await
        .unwrap()
        .is_none());
    assert_eq!(room_view(s, ROOM).await, before);

    // 3. A snapshot id that already exists: fails after the event and txn rows were written.
    let reused_snapshot =
        Ev::member(ROOM, 4, "$bob4", BOB, "join", (2, 2)).txn("PHONE", "key-snap", "txn-snap");
    assert!(
        t.persist_event(&reused_snapshot.build()).await.is_err(),
        "a duplicate snapshot id is refused"
    );
    assert!(
        t.get_event("$bob4").await.unwrap().is_none(),
        "the event is rolled back"
    );
    assert!(
        t.find_txn(BOB, "PHONE", "key-snap")
            .await
            .unwrap()
            .is_none(),
        "the txn id is rolled back"
    );
    assert_eq!(room_view(s, ROOM).await, before);

    // 4. A failure on the very last statement (a repeated forward extremity):
    // the event, txn id, snapshot, current state, membership and redaction
    // written before it must all be rolled back.
    let late = Ev::member(ROOM, 4, "$bob4", BOB, "join", (3, 2))
        .txn("PHONE", "key-late", "txn-late")
        .redacts("$secret", r#"{"redacted":true}"#)
        .extremities(&["$bob4", "$bob4"]);
    assert!(
        t.persist_event(&late.build()).await.is_err(),
        "a repeated forward extremity is refused"
    );
    assert!(
        t.get_event("$bob4").await.unwrap().is_none(),
        "the event is rolled back"
    );
    assert!(
        t.find_txn(BOB, "PHONE", "key-late")
            .await
            .unwrap()
            .is_none(),
        "the txn id is rolled back"
    );
    assert!(
        s.rooms.memberships_for_user(BOB).await.unwrap().is_empty(),
        "the membership is rolled back"
    );
    assert!(
        s.rooms.snapshot_state(3).await.unwrap().is_empty(),
        "the snapshot is rolled back"
    );
    let secret = t.get_event("$secret").await.unwrap().unwrap();
    assert_eq!(
        pdu(&secret.pdu_json)["content"]["body"],
        "hunter2",
        "the redaction is rolled back"
    );
    assert_eq!(room_view(s, ROOM).await, before, "the room is unchanged");

    // The store is still usable, and the same request can now succeed.
    let retry =
        Ev::member(ROOM, 4, "$bob4", BOB, "join", (3, 2)).txn("PHONE", "key-late", "txn-late");
    t.persist_event(&retry.build())
        .await
        .expect("a clean retry succeeds");
    assert_eq!(
        t.find_txn(BOB, "PHONE", "key-late")
            .await
            .unwrap()
            .as_deref(),
        Some("$bob4")
    );
    assert_eq!(rooms_of(s, BOB).await, pairs(&[(ROOM, "join")]));
    assert_eq!(s.rooms.current_snapshot(ROOM).await.unwrap(), 3);
    assert_eq!(s.rooms.forward_extremities(ROOM).await.unwrap(), ["$bob4"]);

    // 5. The same transaction persisted twice (a retry racing the first send):
    // the second copy is refused and leaves no event behind.
    let after = room_view(s, ROOM).await;
    let twin = Ev::message(ROOM, 5, "$twin5", BOB, "hi").before(3);
    let twin = twin.txn("PHONE", "key-late", "txn-late");
    assert!(
        t.persist_event(&twin.build()).await.is_err(),
        "a transaction is stored once"
    );
    assert!(
        t.get_event("$twin5").await.unwrap().is_none(),
        "the duplicate event is rolled back"
    );
    let found = t.find_txn(BOB, "PHONE", "key-late").await.unwrap();
    assert_eq!(
        found.as_deref(),
        Some("$bob4"),
        "the retry still finds the first event"
    );
    assert_eq!(room_view(s, ROOM).await, after);
}

// ----- end-to-end encryption: keys, device lists, to-device, key backup -----

conformance!(
    e2ee_claims_hand_out_each_key_once_under_concurrency,
    e2ee_conflicting_upload_writes_nothing,
    e2ee_to_device_txn_inbox_and_watermark,
    e2ee_backup_versions_and_replacement_rules,
    e2ee_deleting_devices_removes_their_keys_and_inbox,
);
conformance!(timeline: e2ee_device_list_changes_follow_room_sharing);

use hs_engine::storage::{
    BackupKeyRecord, BackupWrite, KeyUpload, KeyUploadOutcome, OneTimeKeyRecord, SignatureRecord,
    ToDeviceMessage,
};

fn otk(id: &str, key: &str) -> OneTimeKeyRecord {
    OneTimeKeyRecord {
        algorithm: "signed_curve25519".to_owned(),
        key_id: id.to_owned(),
        key_json: json!({ "key": key }).to_string(),
    }
}

fn upload_of(
    device_keys: Option<&str>,
    otks: Vec<OneTimeKeyRecord>,
    pos: Option<i64>,
) -> KeyUpload {
    KeyUpload {
        device_keys: device_keys.map(str::to_owned),
        one_time_keys: otks,
        fallback_keys: vec![OneTimeKeyRecord {
            key_json: json!({"key": "fallback", "fallback": true}).to_string(),
            ..otk("FB", "fallback")
        }],
        seq: 1,
        change_pos: pos,
    }
}

async fn e2ee_claims_hand_out_each_key_once_under_concurrency(s: &Storage) {
    let otks = (0..10)
        .map(|i| otk(&format!("K{i}"), &format!("key{i}")))
        .collect();
    let stored = s
        .keys
        .upload_keys(ALICE, "PHONE", &upload_of(None, otks, None))
        .await
        .unwrap();
    assert_eq!(stored, KeyUploadOutcome::Stored);
    let (counts, fallbacks) = s.keys.key_counts(ALICE, "PHONE").await.unwrap();
    assert_eq!(counts, vec![("signed_curve25519".to_owned(), 10)]);
    assert_eq!(fallbacks, vec!["signed_curve25519".to_owned()]);

    let claims = (0..30).map(|_| {
        let keys = s.keys.clone();
        tokio::spawn(async move { keys.claim_key(ALICE, "PHONE", "signed_curve25519").await })
    });
    let mut ids = Vec::new();
    let mut fallback = 0;
    for claim in futures::future::join_all(claims).await {
        let key = claim.unwrap().unwrap().expect("a key for every claim");
        if key.fallback {
            assert_eq!(key.key_id, "FB");
            fallback += 1;
        } else {
            ids.push(key.key_id);
        }
    }
    ids.sort();
    let expected: Vec<String> = (0..10).map(|i| format!("K{i}")).collect();
    assert_eq!(ids, expected, "each one-time key exactly once");
    assert_eq!(fallback, 20, "then the fallback key");
    let (counts, fallbacks) = s.keys.key_counts(ALICE, "PHONE").await.unwrap();
    assert!(
        counts.is_empty() && fallbacks.is_empty(),
        "all used: {counts:?} {fallbacks:?}"
    );
    assert!(s
        .keys
        .claim_key(ALICE, "NOPE", "signed_curve25519")
        .await
        .unwrap()
        .is_none());
}

async fn e2ee_conflicting_upload_writes_nothing(s: &Storage) {
    s.accounts
        .upsert_device(&device(ALICE, "PHONE", Some("phone")))
        .await
        .unwrap();
    let first = upload_of(Some(r#"{"v":1}"#), vec![otk("A", "a")], Some(5));
    s.keys.upload_keys(ALICE, "PHONE", &first).await.unwrap();
    // The same key again is fine; a different key under the same id is not.
    let conflict = upload_of(
        Some(r#"{"v":2}"#),
        vec![otk("B", "b"), otk("A", "changed")],
        Some(6),
    );
    let outcome = s.keys.upload_keys(ALICE, "PHONE", &conflict).await.unwrap();
    assert_eq!(
        outcome,
        KeyUploadOutcome::OneTimeKeyConflict("signed_curve25519:A".into())
    );
    assert_eq!(
        s.keys.device_keys(ALICE, "PHONE").await.unwrap().as_deref(),
        Some(r#"{"v":1}"#)
    );
    let (counts, _) = s.keys.key_counts(ALICE, "PHONE").await.unwrap();
    assert_eq!(
        counts,
        vec![("signed_curve25519".to_owned(), 1)],
        "B was not stored"
    );
    assert_eq!(
        s.device_lists.max_stream_pos().await.unwrap(),
        5,
        "no change at 6"
    );
    let same = upload_of(None, vec![otk("A", "a")], None);
    assert_eq!(
        s.keys.upload_keys(ALICE, "PHONE", &same).await.unwrap(),
        KeyUploadOutcome::Stored
    );
    let listed = s.keys.user_device_keys(ALICE).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].display_name.as_deref(), Some("phone"));
}

fn message(user: &str, device: &str, n: u32) -> ToDeviceMessage {
    ToDeviceMessage {
        user_id: user.to_owned(),
        device_id: device.to_owned(),
        sender: ALICE.to_owned(),
        event_type: "m.test".to_owned(),
        content: json!({ "n": n }).to_string(),
    }
}

async fn e2ee_to_device_txn_inbox_and_watermark(s: &Storage) {
    let t = &s.to_device;
    assert!(t
        .send_to_device(
            ALICE,
            "PHONE",
            "txn1",
            10,
            &[message(BOB, "B1", 1), message(BOB, "B2", 1)]
        )
        .await
        .unwrap());
    assert!(
        !t.send_to_device(ALICE, "PHONE", "txn1", 11, &[message(BOB, "B1", 99)])
            .await
            .unwrap(),
        "a txn is stored once"
    );
    assert!(
        t.send_to_device(ALICE, "LAPTOP", "txn1", 12, &[message(BOB, "B1", 2)])
            .await
            .unwrap(),
        "txn ids are per device"
    );
    let inbox = t.inbox(BOB, "B1", 100).await.unwrap();
    assert_eq!(
        inbox.iter().map(|m| m.stream_pos).collect::<Vec<_>>(),
        vec![10, 12]
    );
    assert_eq!(
        t.inbox(BOB, "B1", 11).await.unwrap().len(),
        1,
        "only up to the given position"
    );
    assert_eq!(t.delete_inbox(BOB, "B1", 10).await.unwrap(), 1);
    assert_eq!(
        t.inbox(BOB, "B1", 100).await.unwrap()[0].content,
        json!({"n": 2}).to_string()
    );
    t.delete_inbox(BOB, "B1", 100).await.unwrap();
    t.delete_inbox(BOB, "B2", 100).await.unwrap();
    assert_eq!(
        s.device_lists.max_stream_pos().await.unwrap(),
        12,
        "delivered positions stay used"
    );
}

fn session(
    room: &str,
    id: &str,
    first: i64,
    forwarded: i64,
    verified: bool,
    tag: &str,
) -> BackupKeyRecord {
    BackupKeyRecord {
        room_id: room.to_owned(),
        session_id: id.to_owned(),
        first_message_index: first,
        forwarded_count: forwarded,
        is_verified: verified,
        session_data: json!({ "tag": tag }).to_string(),
    }
}

async fn e2ee_backup_versions_and_replacement_rules(s: &Storage) {
    let b = &s.backup;
    let v1 = b.create_backup_version(ALICE, "alg", "{}").await.unwrap();
    assert_eq!(
        b.create_backup_version(BOB, "alg", "{}").await.unwrap(),
        v1,
        "numbered per user"
    );
    let tag = |b: &Storage| {
        let b = b.backup.clone();
        async move {
            b.backup_keys(ALICE, v1, Some(ROOM), Some("S"))
                .await
                .unwrap()[0]
                .session_data
                .clone()
        }
    };
    let Ok(BackupWrite::Done { etag, count: 1 }) = b
        .put_backup_keys(ALICE, v1, &[session(ROOM, "S", 5, 1, false, "a")])
        .await
    else {
        panic!("first put");
    };
    let unchanged = b
        .put_backup_keys(ALICE, v1, &[session(ROOM, "S", 6, 0, false, "worse")])
        .await
        .unwrap();
    assert_eq!(
        unchanged,
        BackupWrite::Done { etag, count: 1 },
        "a worse key changes nothing"
    );
    b.put_backup_keys(ALICE, v1, &[session(ROOM, "S", 5, 0, false, "fewer")])
        .await
        .unwrap();
    assert_eq!(tag(s).await, json!({"tag": "fewer"}).to_string());
    b.put_backup_keys(ALICE, v1, &[session(ROOM, "S", 9, 9, true, "verified")])
        .await
        .unwrap();
    b.put_backup_keys(ALICE, v1, &[session(ROOM, "S", 0, 0, false, "unverified")])
        .await
        .unwrap();
    assert_eq!(tag(s).await, json!({"tag": "verified"}).to_string());

    let v2 = b.create_backup_version(ALICE, "alg", "{}").await.unwrap();
    assert_eq!(
        b.put_backup_keys(ALICE, v1, &[]).await.unwrap(),
        BackupWrite::NotLatest(v2)
    );
    assert_eq!(
        b.put_backup_keys(ALICE, 999, &[]).await.unwrap(),
        BackupWrite::NotFound
    );
    assert_eq!(
        b.backup_version(ALICE, None)
            .await
            .unwrap()
            .unwrap()
            .version,
        v2
    );
    assert!(b.delete_backup_version(ALICE, v2).await.unwrap());
    assert!(!b.delete_backup_version(ALICE, v2).await.unwrap());
    let latest = b.backup_version(ALICE, None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.count), (v1, 1));
    let v3 = b.create_backup_version(ALICE, "alg", "{}").await.unwrap();
    assert!(v3 > v2, "deleted versions are not reused");
    let Ok(BackupWrite::Done { count: 0, .. }) =
        b.delete_backup_keys(ALICE, v1, Some(ROOM), None).await
    else {
        panic!("delete keys of the room");
    };
    assert!(b
        .update_backup_version(ALICE, v3, r#"{"k":1}"#)
        .await
        .unwrap());
    assert_eq!(
        b.backup_version(ALICE, Some(v3))
            .await
            .unwrap()
            .unwrap()
            .auth_data,
        r#"{"k":1}"#
    );
}

async fn e2ee_deleting_devices_removes_their_keys_and_inbox(s: &Storage) {
    s.keys
        .upload_keys(
            ALICE,
            "PHONE",
            &upload_of(Some("{}"), vec![otk("A", "a")], None),
        )
        .await
        .unwrap();
    s.keys
        .upload_keys(
            ALICE,
            "LAPTOP",
            &upload_of(Some("{}"), vec![otk("A", "a")], None),
        )
        .await
        .unwrap();
    s.to_device
        .send_to_device(BOB, "B1", "t", 3, &[message(ALICE, "PHONE", 1)])
        .await
        .unwrap();
    let sig = SignatureRecord {
        target_user_id: ALICE.to_owned(),
        target_key_id: "PHONE".to_owned(),
        signer_user_id: ALICE.to_owned(),
        signer_key_id: "ed25519:ssk".to_owned(),
        signature: "sig".to_owned(),
    };
    s.keys.put_signatures(&[sig], ALICE, 4).await.unwrap();
    s.keys
        .delete_device_keys(ALICE, &["PHONE".to_owned()], 7)
        .await
        .unwrap();
    assert!(s.keys.device_keys(ALICE, "PHONE").await.unwrap().is_none());
    assert_eq!(
        s.keys.key_counts(ALICE, "PHONE").await.unwrap(),
        (vec![], vec![])
    );
    assert!(s
        .to_device
        .inbox(ALICE, "PHONE", 100)
        .await
        .unwrap()
        .is_empty());
    assert!(s.keys.signatures_on(ALICE).await.unwrap().is_empty());
    assert!(
        s.keys.device_keys(ALICE, "LAPTOP").await.unwrap().is_some(),
        "other devices keep theirs"
    );
    assert_eq!(
        s.device_lists
            .device_list_changes(ALICE, 4, 7)
            .await
            .unwrap(),
        vec![ALICE.to_owned()]
    );
}

async fn e2ee_device_list_changes_follow_room_sharing(s: &Storage) {
    create_room_with_alice(s, ROOM, 1, 1).await;
    let bob_join = Ev::member(ROOM, 3, "$bob3", BOB, "join", (3, 2));
    s.timeline.persist_event(&bob_join.build()).await.unwrap();
    let lists = &s.device_lists;
    let mut sharing = lists.users_sharing_rooms(ALICE).await.unwrap();
    sharing.sort();
    assert_eq!(sharing, vec![ALICE.to_owned(), BOB.to_owned()]);
    s.keys
        .upload_keys(BOB, "B1", &upload_of(Some("{}"), vec![], Some(4)))
        .await
        .unwrap();
    s.keys
        .upload_keys(
            "@carol:example.org",
            "C1",
            &upload_of(Some("{}"), vec![], Some(5)),
        )
        .await
        .unwrap();
    assert_eq!(
        lists.device_list_changes(ALICE, 0, 10).await.unwrap(),
        vec![BOB.to_owned()],
        "carol shares no room"
    );
    assert!(
        lists
            .device_list_changes(ALICE, 4, 10)
            .await
            .unwrap()
            .is_empty(),
        "the window is (from, to]"
    );
    let changes = lists.membership_changes(ALICE, 2, 3).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].other_user.as_str(), changes[0].other_changed),
        (BOB, true)
    );
    let bob_leave = Ev::member(ROOM, 6, "$bob6", BOB, "leave", (4, 3));
    s.timeline.persist_event(&bob_leave.build()).await.unwrap();
    let changes = lists.membership_changes(ALICE, 5, 6).await.unwrap();
    assert_eq!(changes[0].other_membership, "leave");
    assert_eq!(
        lists.users_sharing_rooms(ALICE).await.unwrap(),
        vec![ALICE.to_owned()]
    );
    assert!(
        lists
            .device_list_changes(ALICE, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "no longer shared"
    );
}

// ----- group commit: concurrent sends share a transaction, not a fate -----

conformance!(timeline: concurrent_sends_commit_together_and_fail_alone);

/// Sends into many rooms at once are written together (one transaction on
/// SQLite's single writer); each still lands exactly as if written alone, each
/// room's forward extremity is its own event, and one send that conflicts
/// fails alone without taking the others in its batch down with it.
async fn concurrent_sends_commit_together_and_fail_alone(s: &Storage) {
    let t = s.timeline.as_ref();
    let rooms: Vec<String> = (0..8).map(|i| format!("!g{i}:example.org")).collect();
    for (i, room_id) in rooms.iter().enumerate() {
        let base = 1 + 2 * i as i64;
        create_room_with_alice(s, room_id, base, base).await;
    }
    let key = "send/!g0:example.org/m.room.message|t";
    t.persist_event(
        &Ev::message(&rooms[0], 20, "$first", ALICE, "first")
            .before(2)
            .txn("PHONE", key, "t")
            .build(),
    )
    .await
    .unwrap();

    // One message per room, plus a replay of the first txn id, all at once.
    let mut sends: Vec<_> = rooms
        .iter()
        .enumerate()
        .map(|(i, room_id)| {
            Ev::message(room_id, 30 + i as i64, &format!("$m{i}"), ALICE, "hi")
                .before(2 + 2 * i as i64)
                .txn("PHONE", &format!("send/{room_id}/m.room.message|m{i}"), "m")
                .build()
        })
        .collect();
    sends.push(
        Ev::message(&rooms[0], 40, "$replay", ALICE, "again")
            .before(2)
            .txn("PHONE", key, "t")
            .build(),
    );
    let results = futures::future::join_all(sends.iter().map(|ev| t.persist_event(ev))).await;

    assert!(
        results[8].is_err(),
        "the replayed txn id is refused: {:?}",
        results[8]
    );
    assert!(t.get_event("$replay").await.unwrap().is_none());
    for (i, room_id) in rooms.iter().enumerate() {
        assert!(results[i].is_ok(), "send {i}: {:?}", results[i]);
        let ev = t.get_event(&format!("$m{i}")).await.unwrap().unwrap();
        assert_eq!(
            (ev.stream_pos, ev.room_id.as_str()),
            (30 + i as i64, room_id.as_str())
        );
        let txn = format!("send/{room_id}/m.room.message|m{i}");
        assert_eq!(
            t.find_txn(ALICE, "PHONE", &txn).await.unwrap(),
            Some(format!("$m{i}"))
        );
        assert_eq!(
            s.rooms.forward_extremities(room_id).await.unwrap(),
            vec![format!("$m{i}")],
            "each room's extremity is its own latest event"
        );
    }
    assert_eq!(
        t.find_txn(ALICE, "PHONE", key).await.unwrap().as_deref(),
        Some("$first"),
        "the first send keeps its txn id"
    );
}

// ---------------------------------------------------------------------------
// Federation: a large room's state taken in at once (a remote join)

conformance!(timeline: join_state_in_bulk);

use hs_engine::storage::federation::{
    CurrentStateWrite, OutlierWrite, RemoteEventWrite, SnapshotWrite,
};

/// More rows than one multi-row statement carries, so every write and read
/// below spans several chunks.
const BULK: usize = 2_500;

fn outlier(pos: i64, event_id: &str, state_key: &str, rejected: bool) -> OutlierWrite {
    OutlierWrite {
        stream_pos: pos,
        event_id: event_id.to_owned(),
        room_id: ROOM.to_owned(),
        event_type: "m.room.member".to_owned(),
        state_key: Some(state_key.to_owned()),
        sender: state_key.to_owned(),
        origin_server_ts: 1_000 + pos,
        depth: pos,
        pdu_json: json!({ "event_id": event_id, "pos": pos }).to_string(),
        rejected,
    }
}

fn member(i: usize) -> String {
    format!("@u{i}:remote.example")
}

async fn join_state_in_bulk(s: &Storage) {
    let f = s.federation.as_ref();
    s.rooms.create_room(&room(ROOM, false)).await.unwrap();
    // One event held already, which a later batch leaves alone.
    f.store_outliers(&[outlier(1, "$m0", &member(0), false)])
        .await
        .unwrap();
    let mut batch: Vec<OutlierWrite> = (0..BULK)
        .map(|i| outlier(10 + i as i64, &format!("$m{i}"), &member(i), i % 7 == 3))
        .collect();
    // Listed twice in one batch: the first copy is kept.
    let mut twice = outlier(10 + BULK as i64, "$m5", &member(5), false);
    twice.pdu_json = json!({ "second": true }).to_string();
    batch.push(twice);
    f.store_outliers(&batch).await.unwrap();

    let mut wanted: Vec<String> = (0..BULK).map(|i| format!("$m{i}")).collect();
    wanted.push("$nosuch".to_owned());
    let mut got = f.get_events(&wanted).await.unwrap();
    got.sort_by_key(|e| e.stream_pos);
    assert_eq!(
        got.len(),
        BULK,
        "every held event once, unknown ids skipped"
    );
    assert_eq!(
        (got[0].event_id.as_str(), got[0].stream_pos),
        ("$m0", 1),
        "an event already held is left alone"
    );
    for ev in &got[1..] {
        let i: usize = ev.event_id[2..].parse().unwrap();
        assert_eq!(ev.stream_pos, 10 + i as i64);
        assert_eq!(ev.rejected, i % 7 == 3, "{}", ev.event_id);
        assert_eq!(ev.room_id, ROOM);
        assert_eq!(pdu(&ev.pdu_json)["event_id"], ev.event_id.as_str());
    }
    assert_eq!(f.event_is_outlier("$m1").await.unwrap(), Some(true));
    assert!(f.get_events(&[]).await.unwrap().is_empty());

    // Our join on top of that state: the full state as the first snapshot,
    // as current state and as membership rows.
    let state: Vec<(String, String, String)> = (0..BULK)
        .map(|i| triple("m.room.member", &member(i), &format!("$m{i}")))
        .collect();
    let mut changed = state.clone();
    changed.push(triple("m.room.member", ALICE, "$join"));
    // A key listed twice: the last entry wins, as when written one by one.
    changed.push(triple("m.room.member", &member(1), "$m1-again"));
    let mut memberships: Vec<(String, String, String)> = (0..BULK)
        .map(|i| (member(i), "join".to_owned(), format!("$m{i}")))
        .collect();
    memberships.push((ALICE.to_owned(), "invite".to_owned(), "$invite".to_owned()));
    memberships.push((ALICE.to_owned(), "join".to_owned(), "$join".to_owned()));
    let join = RemoteEventWrite {
        stream_pos: 20_000,
        event_id: "$join".to_owned(),
        room_id: ROOM.to_owned(),
        event_type: "m.room.member".to_owned(),
        state_key: Some(ALICE.to_owned()),
        sender: ALICE.to_owned(),
        origin_server_ts: 5_000,
        depth: 9,
        pdu_json: json!({ "event_id": "$join" }).to_string(),
        rejected: false,
        outlier: false,
        state_before: 100,
        snapshots: vec![
            SnapshotWrite {
                snapshot_id: 100,
                room_id: ROOM.to_owned(),
                parent: None,
                entries: state.clone(),
            },
            SnapshotWrite {
                snapshot_id: 101,
                room_id: ROOM.to_owned(),
                parent: Some(100),
                entries: vec![triple("m.room.member", ALICE, "$join")],
            },
        ],
        state_after: Some(101),
        current: Some(CurrentStateWrite {
            snapshot_id: 101,
            changed,
            memberships,
            forward_extremities: vec!["$join".to_owned()],
        }),
        redaction: None,
    };
    f.persist_remote_event(&join).await.unwrap();

    assert_eq!(
        sorted(s.rooms.snapshot_state(100).await.unwrap()),
        sorted(state.clone())
    );
    let mut expected = state;
    expected[1].2 = "$m1-again".to_owned();
    expected.push(triple("m.room.member", ALICE, "$join"));
    assert_eq!(
        sorted(s.rooms.current_state(ROOM).await.unwrap()),
        sorted(expected)
    );
    assert_eq!(s.rooms.current_snapshot(ROOM).await.unwrap(), 101);
    assert_eq!(s.rooms.forward_extremities(ROOM).await.unwrap(), ["$join"]);
    let members = sorted_members(s, ROOM).await;
    assert_eq!(members.len(), BULK + 1);
    assert!(members.contains(&(ALICE.to_owned(), "join".to_owned())));
    assert_eq!(
        rooms_of(s, ALICE).await,
        pairs(&[(ROOM, "join")]),
        "the last membership row of a user wins"
    );
    assert_eq!(f.state_after_snapshot("$join").await.unwrap(), Some(101));
}
