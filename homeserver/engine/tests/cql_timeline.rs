//! Conformance of the CQL event log against a real CQL node.
//!
//! `scripts/test.sh scaleout` starts a single Apache Cassandra 5 node from
//! Maven Central's jars and sets `HS_TEST_CQL_URL` (`host:port`). Each test
//! connects with a keyspace of its own, so they run in parallel, and drops it
//! at the end. Without `HS_TEST_CQL_URL` the tests skip, except under
//! `CI=true`, where they fail.
//!
//! Run: `cargo test -p hs-engine --features cql --test cql_timeline`.
#![cfg(feature = "cql")]

use hs_engine::config::Cql;
use hs_engine::storage::cql::{
    bucket_of, CqlEventLog, EventLog, LogEvent, BUCKET_SIZE, DEFAULT_BUCKET_SHIFT,
};
use hs_engine::storage::Direction::{Backward, Forward};
use serde_json::json;

/// A log on a fresh keyspace, or `None` when no CQL node is configured.
async fn log(test: &str) -> Option<(CqlEventLog, String)> {
    let (config, keyspace) = config(test)?;
    let log = CqlEventLog::connect(&config).await.expect("connect");
    Some((log, keyspace))
}

/// The configuration of a fresh keyspace, or `None` when no CQL node is
/// configured.
fn config(test: &str) -> Option<(Cql, String)> {
    let Ok(url) = std::env::var("HS_TEST_CQL_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "HS_TEST_CQL_URL is not set (scripts/test.sh scaleout starts Cassandra)"
        );
        eprintln!("{test}: skipped, HS_TEST_CQL_URL is not set");
        return None;
    };
    let keyspace = format!("hs_{test}_{:08x}", rand::random::<u32>());
    let config = Cql {
        contact_points: vec![url],
        keyspace: keyspace.clone(),
        replication_factor: 1,
        ..Cql::default()
    };
    Some((config, keyspace))
}

async fn drop_keyspace(log: &CqlEventLog, keyspace: &str) {
    log.session()
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .expect("drop keyspace");
}

fn ev(room: &str, pos: i64) -> LogEvent {
    let event_id = format!("$e{pos}_{}", room.trim_start_matches('!'));
    LogEvent {
        stream_pos: pos,
        pdu_json: json!({"event_id": event_id, "room_id": room, "content": {"body": pos}})
            .to_string(),
        event_id,
        room_id: room.to_owned(),
        event_type: "m.room.message".to_owned(),
        state_key: None,
        sender: "@alice:example.org".to_owned(),
        origin_server_ts: 1_700_000_000_000 + pos,
        depth: pos,
        state_before: pos - 1,
        rejected: false,
        txn: None,
        redacted: false,
    }
}

fn positions(events: &[LogEvent]) -> Vec<i64> {
    events.iter().map(|e| e.stream_pos).collect()
}

const ROOM: &str = "!room:example.org";
const OTHER: &str = "!other:example.org";

#[tokio::test]
async fn append_and_point_reads() {
    let Some((log, ks)) = log("point").await else {
        return;
    };
    let mut state = ev(ROOM, 7);
    state.event_type = "m.room.topic".to_owned();
    state.state_key = Some(String::new());
    state.rejected = true;
    let mut sent = ev(ROOM, 8);
    sent.txn = Some(("DEVICE".to_owned(), "txn1".to_owned()));
    let plain = ev(OTHER, 9);
    log.append(&[state.clone(), sent.clone(), plain.clone()])
        .await
        .unwrap();

    for e in [&state, &sent, &plain] {
        assert_eq!(log.get_event(&e.event_id).await.unwrap().as_ref(), Some(e));
    }
    assert_eq!(log.get_event("$missing").await.unwrap(), None);
    // Positions start at 1; a batch with a bad one writes nothing.
    let bad = [ev(ROOM, 20), ev(ROOM, 0)];
    assert!(log.append(&bad).await.is_err());
    assert_eq!(log.get_event(&bad[0].event_id).await.unwrap(), None);
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), 8);
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn range_reads_cross_buckets() {
    let Some((log, ks)) = log("ranges").await else {
        return;
    };
    // Three events per bucket over five buckets, then one far away: the
    // buckets in between are empty and must be skipped, not scanned.
    let step = BUCKET_SIZE / 3;
    let mut all: Vec<i64> = (0..15).map(|i| 1 + i * step).collect();
    all.push(200 * BUCKET_SIZE + 5);
    assert_eq!(bucket_of(all[14], DEFAULT_BUCKET_SHIFT), 4);
    let events: Vec<LogEvent> = all.iter().map(|&p| ev(ROOM, p)).collect();
    log.append(&events).await.unwrap();
    log.append(&[ev(OTHER, 2), ev(OTHER, step + 2)])
        .await
        .unwrap();

    let everything = log
        .room_events(ROOM, 0, i64::MAX, Forward, 100)
        .await
        .unwrap();
    assert_eq!(positions(&everything), all);
    assert_eq!(everything, events);

    // Forward pages, each resuming after the last position seen.
    let mut paged = Vec::new();
    let mut from = 0;
    loop {
        let page = log
            .room_events(ROOM, from, i64::MAX, Forward, 4)
            .await
            .unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        from = last.stream_pos;
        paged.extend(positions(&page));
    }
    assert_eq!(paged, all);

    // Backward: newest first, `to` exclusive, `from` inclusive.
    let newest = log
        .room_events(ROOM, i64::MAX, 0, Backward, 5)
        .await
        .unwrap();
    let want: Vec<i64> = all.iter().rev().take(5).copied().collect();
    assert_eq!(positions(&newest), want);
    let middle = log
        .room_events(ROOM, all[9], all[3], Backward, 100)
        .await
        .unwrap();
    assert_eq!(
        positions(&middle),
        (4..=9).rev().map(|i| all[i]).collect::<Vec<_>>()
    );
    let middle = log
        .room_events(ROOM, all[3], all[9], Forward, 100)
        .await
        .unwrap();
    assert_eq!(positions(&middle), all[4..=9].to_vec());

    // Empty and degenerate ranges.
    assert!(log
        .room_events(ROOM, all[5], all[5], Forward, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(log
        .room_events(ROOM, all[9], all[3], Forward, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(log
        .room_events(ROOM, 0, i64::MAX, Forward, 0)
        .await
        .unwrap()
        .is_empty());
    assert!(log
        .room_events("!none:x", 0, i64::MAX, Forward, 10)
        .await
        .unwrap()
        .is_empty());
    let other = log
        .room_events(OTHER, 0, i64::MAX, Forward, 10)
        .await
        .unwrap();
    assert_eq!(positions(&other), vec![2, step + 2]);
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn range_reads_over_many_buckets() {
    let Some((log, ks)) = log("many_buckets").await else {
        return;
    };
    // More non-empty buckets than one listing page holds.
    let all: Vec<i64> = (0..150).map(|b| b * BUCKET_SIZE + 11).collect();
    let events: Vec<LogEvent> = all.iter().map(|&p| ev(ROOM, p)).collect();
    log.append(&events).await.unwrap();
    let fwd = log
        .room_events(ROOM, 0, i64::MAX, Forward, 1000)
        .await
        .unwrap();
    assert_eq!(positions(&fwd), all);
    let back = log
        .room_events(ROOM, i64::MAX, 0, Backward, 140)
        .await
        .unwrap();
    let want: Vec<i64> = all.iter().rev().take(140).copied().collect();
    assert_eq!(positions(&back), want);
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn max_pos_keeps_the_highest() {
    let Some((log, ks)) = log("max_pos").await else {
        return;
    };
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), 0);
    log.append(&[ev(ROOM, 50), ev(ROOM, 3 * BUCKET_SIZE)])
        .await
        .unwrap();
    // A late append of an older position does not lower the maximum.
    log.append(&[ev(ROOM, 40)]).await.unwrap();
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), 3 * BUCKET_SIZE);
    log.append(&[ev(ROOM, 3 * BUCKET_SIZE + 1)]).await.unwrap();
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), 3 * BUCKET_SIZE + 1);
    assert_eq!(log.room_max_pos(OTHER).await.unwrap(), 0);
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn redaction_replaces_pdu_and_survives_reappend() {
    let Some((log, ks)) = log("redact").await else {
        return;
    };
    let target = ev(ROOM, 10);
    log.append(&[target.clone(), ev(ROOM, 11)]).await.unwrap();
    let redacted = json!({"event_id": target.event_id, "room_id": ROOM, "content": {}}).to_string();
    assert!(log.redact(&target.event_id, &redacted).await.unwrap());
    assert!(!log.redact("$missing", &redacted).await.unwrap());

    let check = |e: &LogEvent| {
        assert!(e.redacted);
        assert_eq!(e.pdu_json, redacted);
        assert_eq!(e.event_type, "m.room.message");
    };
    check(&log.get_event(&target.event_id).await.unwrap().unwrap());
    let range = log.room_events(ROOM, 0, 20, Forward, 10).await.unwrap();
    check(&range[0]);
    assert!(!range[1].redacted);

    // A retried append of the original must not bring the content back.
    log.append(std::slice::from_ref(&target)).await.unwrap();
    check(&log.get_event(&target.event_id).await.unwrap().unwrap());
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn reappend_is_idempotent() {
    let Some((log, ks)) = log("reappend").await else {
        return;
    };
    let events: Vec<LogEvent> = (1..=30).map(|i| ev(ROOM, i * BUCKET_SIZE / 4)).collect();
    log.append(&events).await.unwrap();
    log.append(&events).await.unwrap();
    log.append(&events[10..20]).await.unwrap();
    let read = log
        .room_events(ROOM, 0, i64::MAX, Forward, 100)
        .await
        .unwrap();
    assert_eq!(read, events);
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), events[29].stream_pos);
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn purge_and_delete_room() {
    let Some((log, ks)) = log("purge").await else {
        return;
    };
    let step = BUCKET_SIZE / 2;
    let all: Vec<i64> = (1..=10).map(|i| i * step + 1).collect();
    let events: Vec<LogEvent> = all.iter().map(|&p| ev(ROOM, p)).collect();
    log.append(&events).await.unwrap();
    log.append(&[ev(OTHER, 5)]).await.unwrap();

    // Everything before the 7th event: whole buckets and half of one.
    let purged = log.purge_before(ROOM, all[6]).await.unwrap();
    assert_eq!(purged, 6);
    let left = log
        .room_events(ROOM, 0, i64::MAX, Forward, 100)
        .await
        .unwrap();
    assert_eq!(positions(&left), all[6..].to_vec());
    assert_eq!(log.get_event(&events[0].event_id).await.unwrap(), None);
    assert_eq!(log.get_event(&events[5].event_id).await.unwrap(), None);
    assert!(log.get_event(&events[6].event_id).await.unwrap().is_some());
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), all[9]);
    assert_eq!(log.purge_before(ROOM, all[6]).await.unwrap(), 0);

    assert_eq!(log.delete_room(ROOM).await.unwrap(), 4);
    assert!(log
        .room_events(ROOM, 0, i64::MAX, Forward, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(log
        .room_events(ROOM, i64::MAX, 0, Backward, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(log.get_event(&events[9].event_id).await.unwrap(), None);
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), 0);
    // The other room is untouched.
    assert_eq!(
        log.room_events(OTHER, 0, 100, Forward, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(log.room_max_pos(OTHER).await.unwrap(), 5);

    // New events after the deletion publish a maximum again.
    let later = ev(ROOM, 20 * BUCKET_SIZE);
    log.append(std::slice::from_ref(&later)).await.unwrap();
    assert_eq!(log.room_max_pos(ROOM).await.unwrap(), later.stream_pos);
    let read = log
        .room_events(ROOM, 0, i64::MAX, Forward, 10)
        .await
        .unwrap();
    assert_eq!(read, vec![later]);
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn many_rooms_interleaved() {
    let Some((log, ks)) = log("interleaved").await else {
        return;
    };
    // One global position sequence dealt round-robin over 12 rooms, with
    // strides so that each room's events span several buckets; appended in
    // concurrent batches in an order unrelated to position.
    let rooms: Vec<String> = (0..12).map(|i| format!("!r{i}:example.org")).collect();
    let stride = BUCKET_SIZE / 16;
    let mut events: Vec<LogEvent> = (0..360)
        .map(|i| ev(&rooms[(i % 12) as usize], 1 + i * stride))
        .collect();
    events.reverse();
    let batches: Vec<&[LogEvent]> = events.chunks(25).collect();
    futures::future::try_join_all(batches.iter().map(|b| log.append(b)))
        .await
        .unwrap();
    events.reverse();

    for (r, room) in rooms.iter().enumerate() {
        let want: Vec<&LogEvent> = events.iter().filter(|e| &e.room_id == room).collect();
        assert_eq!(want.len(), 30);
        let fwd = log
            .room_events(room, 0, i64::MAX, Forward, 100)
            .await
            .unwrap();
        assert_eq!(fwd.iter().collect::<Vec<_>>(), want, "room {r}");
        let back = log
            .room_events(room, i64::MAX, 0, Backward, 7)
            .await
            .unwrap();
        let newest: Vec<i64> = want.iter().rev().take(7).map(|e| e.stream_pos).collect();
        assert_eq!(positions(&back), newest, "room {r}");
        assert_eq!(log.room_max_pos(room).await.unwrap(), want[29].stream_pos);
    }
    drop_keyspace(&log, &ks).await;
}

#[tokio::test]
async fn bucket_shift_is_recorded_in_the_keyspace() {
    let Some((config, ks)) = config("shift") else {
        return;
    };
    // A keyspace created for clock-derived positions (~2^57) with a wider
    // bucket keeps its shift: a later connect asking for the default reads
    // the recorded one, so every stored row is still found.
    let log = CqlEventLog::connect_with_bucket_shift(&config, 42)
        .await
        .expect("connect");
    assert_eq!(log.bucket_shift(), 42);
    let base = 1_i64 << 57;
    let all: Vec<i64> = (0..6).map(|i| base + i * (1 << 41)).collect();
    assert_eq!(bucket_of(all[0], 42), bucket_of(all[1], 42));
    assert_ne!(bucket_of(all[1], 42), bucket_of(all[2], 42));
    let events: Vec<LogEvent> = all.iter().map(|&p| ev(ROOM, p)).collect();
    log.append(&events).await.unwrap();
    drop(log);

    let again = CqlEventLog::connect(&config).await.expect("reconnect");
    assert_eq!(again.bucket_shift(), 42, "the recorded shift wins");
    let read = again
        .room_events(ROOM, 0, i64::MAX, Forward, 100)
        .await
        .unwrap();
    assert_eq!(read, events);
    assert_eq!(
        again.get_event(&events[3].event_id).await.unwrap().as_ref(),
        Some(&events[3])
    );
    drop_keyspace(&again, &ks).await;

    // A new keyspace records the default.
    let (config, ks) = config_fresh("shift_default");
    let log = CqlEventLog::connect(&config).await.expect("connect");
    assert_eq!(log.bucket_shift(), DEFAULT_BUCKET_SHIFT);
    drop_keyspace(&log, &ks).await;
}

fn config_fresh(test: &str) -> (Cql, String) {
    config(test).expect("HS_TEST_CQL_URL is set")
}

#[tokio::test]
async fn rows_by_key_and_redaction_at_a_key() {
    let Some((log, ks)) = log("keys").await else {
        return;
    };
    // Three events of a page over two buckets, one event of another room.
    let positions = [BUCKET_SIZE - 2, BUCKET_SIZE - 1, BUCKET_SIZE + 3];
    let events: Vec<LogEvent> = positions.iter().map(|&p| ev(ROOM, p)).collect();
    log.append(&events).await.unwrap();
    log.append(&[ev(OTHER, BUCKET_SIZE)]).await.unwrap();
    // An append whose SQL commit failed: another event at a taken position.
    // It must add a row of its own, not overwrite the event there.
    let mut stray = ev(ROOM, positions[1]);
    stray.event_id = "$stray".to_owned();
    stray.pdu_json = json!({"event_id": "$stray"}).to_string();
    log.append(std::slice::from_ref(&stray)).await.unwrap();

    let keys: Vec<(i64, String)> = events
        .iter()
        .map(|e| (e.stream_pos, e.event_id.clone()))
        .collect();
    let mut got = log.events_at(ROOM, &keys).await.unwrap();
    got.sort_by_key(|e| e.stream_pos);
    assert_eq!(got, events, "exactly the rows asked for");
    let one = log.events_at(ROOM, &keys[1..2]).await.unwrap();
    assert_eq!(one, vec![events[1].clone()]);
    let wrong_room = log.events_at(OTHER, &keys).await.unwrap();
    assert!(wrong_room.is_empty());
    let unknown = log
        .events_at(ROOM, &[(positions[0], "$nope".to_owned())])
        .await
        .unwrap();
    assert!(unknown.is_empty());

    let redacted = json!({"event_id": events[1].event_id, "content": {}}).to_string();
    log.redact_at(ROOM, positions[1], &events[1].event_id, &redacted)
        .await
        .unwrap();
    let after = log.events_at(ROOM, &keys[1..2]).await.unwrap();
    assert!(after[0].redacted);
    assert_eq!(after[0].pdu_json, redacted);
    let stray_row = log
        .events_at(ROOM, &[(positions[1], "$stray".to_owned())])
        .await
        .unwrap();
    assert_eq!(
        stray_row,
        vec![stray],
        "the other row at the position is untouched"
    );
    drop_keyspace(&log, &ks).await;
}
