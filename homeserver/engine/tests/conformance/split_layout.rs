//! Where each part of an event lands when the timeline is split between the
//! SQL store and the CQL event log, looked at under the storage traits: the
//! SQL `events` table and the log's own rows.

use hs_engine::storage::cql::{bucket_of, EventLog};
use serde_json::json;
use sqlx::Row;

use super::common::{pdu, Ev, TestStore};
use super::{create_room_with_alice, ALICE, ROOM};

#[tokio::test]
async fn bodies_live_in_the_log_sqlite() {
    if let Some(store) = TestStore::sqlite().await.with_cql().await {
        bodies_live_in_the_log(&store).await;
        store.finish().await;
    }
}

#[tokio::test]
async fn bodies_live_in_the_log_postgres() {
    let Some(store) = TestStore::postgres().await else {
        eprintln!("HS_TEST_POSTGRES_URL is not set: skipped on PostgreSQL");
        return;
    };
    if let Some(store) = store.with_cql().await {
        bodies_live_in_the_log(&store).await;
        store.finish().await;
    }
}

#[tokio::test]
async fn failed_log_append_writes_nothing_sqlite() {
    if let Some(store) = TestStore::sqlite().await.with_cql().await {
        failed_log_append_writes_nothing(&store).await;
        store.finish().await;
    }
}

/// `(event_id, pdu_json)` of every SQL event row, in stream order.
async fn sql_bodies(store: &TestStore) -> Vec<(String, String)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&store.url).await.expect("connect");
    let rows = sqlx::query("SELECT event_id, pdu_json FROM events ORDER BY stream_pos")
        .fetch_all(&pool)
        .await
        .expect("read events");
    pool.close().await;
    rows.iter()
        .map(|r| (r.get("event_id"), r.get("pdu_json")))
        .collect()
}

async fn bodies_live_in_the_log(store: &TestStore) {
    let (s, t) = (&store.storage, store.storage.timeline.as_ref());
    let (log, keyspace) = store.event_log().expect("with_cql");
    create_room_with_alice(s, ROOM, 1, 1).await;
    let msg = Ev::message(ROOM, 3, "$m3", ALICE, "only in the log")
        .before(2)
        .txn("PHONE", "send/k", "t1");
    t.persist_event(&msg.build()).await.unwrap();

    // SQL: state bodies whole, the message's body empty ("in the log").
    let sql = sql_bodies(store).await;
    let ids: Vec<&str> = sql.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["$create1", "$join2", "$m3"]);
    assert_eq!(pdu(&sql[0].1)["type"], "m.room.create");
    assert_eq!(pdu(&sql[1].1)["content"]["membership"], "join");
    assert_eq!(sql[2].1, "", "the message's body is not in SQL");
    // The log: the message, not the state events.
    let row = log.get_event("$m3").await.unwrap().expect("in the log");
    assert_eq!(pdu(&row.pdu_json)["content"]["body"], "only in the log");
    assert_eq!(row.txn, Some(("PHONE".to_owned(), "t1".to_owned())));
    assert!(log.get_event("$create1").await.unwrap().is_none());
    // Through the traits, the body reads back whole.
    let read = t.get_event("$m3").await.unwrap().unwrap();
    assert_eq!(read.pdu_json, row.pdu_json);

    // A redaction: SQL serves the redacted form, and the original is erased
    // from the log row, not only hidden behind `redacted_pdu_json`.
    let redacted = json!({
        "event_id": "$m3", "room_id": ROOM, "type": "m.room.message", "sender": ALICE, "content": {},
    })
    .to_string();
    let redaction = Ev::new(ROOM, 4, "$r4", ALICE, "m.room.redaction", json!({}))
        .before(2)
        .redacts("$m3", &redacted);
    t.persist_event(&redaction.build()).await.unwrap();
    let sql = sql_bodies(store).await;
    assert_eq!(sql[2], ("$m3".to_owned(), redacted.clone()));
    assert_eq!(sql[3], ("$r4".to_owned(), String::new()));
    let row = log.get_event("$m3").await.unwrap().unwrap();
    assert!(row.redacted);
    assert_eq!(row.pdu_json, redacted);
    let bucket = bucket_of(3, log.bucket_shift());
    let original: (Option<String>,) = log
        .session()
        .query_unpaged(
            format!(
                "SELECT pdu_json FROM {keyspace}.events \
                 WHERE room_id = ? AND bucket = ? AND stream_pos = ? AND event_id = ?"
            ),
            (ROOM, bucket, 3_i64, "$m3"),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .first_row()
        .unwrap();
    assert_eq!(
        original,
        (None,),
        "the original body is erased from the log"
    );
    assert_eq!(
        t.get_event("$m3").await.unwrap().unwrap().pdu_json,
        redacted
    );

    // Purging the room deletes its rows from the log too.
    s.admin.purge_room(ROOM).await.unwrap();
    assert!(log.get_event("$r4").await.unwrap().is_none());
    assert!(log.get_event("$m3").await.unwrap().is_none());
    assert!(t.get_event("$r4").await.unwrap().is_none());
}

async fn failed_log_append_writes_nothing(store: &TestStore) {
    let (s, t) = (&store.storage, store.storage.timeline.as_ref());
    let (log, keyspace) = store.event_log().expect("with_cql");
    create_room_with_alice(s, ROOM, 1, 1).await;
    t.persist_event(&Ev::message(ROOM, 3, "$m3", ALICE, "a").before(2).build())
        .await
        .unwrap();
    let sql_before = sql_bodies(store).await;
    let extremities = s.rooms.forward_extremities(ROOM).await.unwrap();

    // The log loses its table: every append fails.
    log.session()
        .query_unpaged(format!("DROP TABLE {keyspace}.events"), ())
        .await
        .unwrap();
    let msg = Ev::message(ROOM, 4, "$m4", ALICE, "b")
        .before(2)
        .txn("PHONE", "send/k4", "t4");
    assert!(
        t.persist_event(&msg.build()).await.is_err(),
        "the send fails when its body cannot be stored"
    );
    assert_eq!(sql_bodies(store).await, sql_before, "no SQL row either");
    assert!(t
        .find_txn(ALICE, "PHONE", "send/k4")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.rooms.forward_extremities(ROOM).await.unwrap(),
        extremities
    );
    assert_eq!(t.room_max_pos(ROOM).await.unwrap(), 3);
    assert!(t.get_event("$m4").await.unwrap().is_none());
    // Reads of bodies in the log fail too, rather than skipping the event.
    assert!(t.get_event("$m3").await.is_err());
    // State events keep their bodies in SQL and persist regardless.
    let topic = Ev::new(
        ROOM,
        5,
        "$topic5",
        ALICE,
        "m.room.topic",
        json!({"topic": "x"}),
    )
    .state("", (3, 2));
    t.persist_event(&topic.build()).await.unwrap();
    let read = t.get_event("$topic5").await.unwrap().unwrap();
    assert_eq!(pdu(&read.pdu_json)["content"]["topic"], "x");
}
