//! Multi-instance mode: several processes serve one server name on one
//! PostgreSQL database, with Redis carrying stream floors and wake-ups
//! between them (docs/scale-out.md). Run by the scaleout step of
//! `scripts/test.sh`, which provides PostgreSQL and a Redis Cluster.

mod common;

use std::time::Duration;

use common::{cluster, txn, SyncCursor};
use serde_json::json;

/// Each body exactly once, in the order sent.
fn assert_exactly_once(got: &[String], sent: &[String]) {
    assert_eq!(got, sent, "messages missing, duplicated or out of order");
}

/// Room timelines long enough that a burst never comes back `limited`.
const FILTER: &str = r#"{"room":{"timeline":{"limit":200}}}"#;

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_on_different_instances_chat_in_real_time() {
    if !cluster::available() {
        return;
    }
    let c = cluster::Cluster::start(3, cluster::redis_cluster()).await;
    let (one, three) = (&c.instances[0], &c.instances[2]);
    let alice = one.register("alice").await;
    let bob = three.register("bob").await;
    // Accounts are shared: bob logs in on instance 1 too.
    one.login("bob", common::PASSWORD).await.whoami().await.ok();
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;

    let (mut bob_sync, _) = SyncCursor::initial(&bob, Some(FILTER)).await;
    let (mut alice_sync, _) = SyncCursor::initial(&alice, Some(FILTER)).await;
    let from_alice = texts("alice", 30);
    let from_bob = texts("bob", 30);
    // Both talk at once, each through their own instance.
    let send_a = async {
        for t in &from_alice {
            alice.send_text(&room, t).await;
        }
    };
    let send_b = async {
        for t in &from_bob {
            bob.send_text(&room, t).await;
        }
    };
    tokio::join!(send_a, send_b);
    let everything = |got: &[serde_json::Value]| common::bodies(got).len() == 60;
    let at_bob = bob_sync
        .collect_until(&room, Duration::from_secs(20), everything)
        .await;
    let at_alice = alice_sync
        .collect_until(&room, Duration::from_secs(20), everything)
        .await;
    for got in [common::bodies(&at_bob), common::bodies(&at_alice)] {
        let mine: Vec<_> = got
            .iter()
            .filter(|b| b.starts_with("alice"))
            .cloned()
            .collect();
        let theirs: Vec<_> = got
            .iter()
            .filter(|b| b.starts_with("bob"))
            .cloned()
            .collect();
        assert_exactly_once(&mine, &from_alice);
        assert_exactly_once(&theirs, &from_bob);
    }
    // Both saw one history: the same events in the same order.
    assert_eq!(common::event_ids(&at_bob), common::event_ids(&at_alice));

    // A long-poll on instance 3 wakes for a send on instance 1.
    let waiting = tokio::spawn({
        let mut cursor = SyncCursor {
            client: bob.clone(),
            since: bob_sync.since.clone(),
            filter: Some(FILTER.to_owned()),
        };
        let room = room.clone();
        async move {
            let started = std::time::Instant::now();
            let got = cursor
                .collect_until(&room, Duration::from_secs(10), |g| {
                    !common::bodies(g).is_empty()
                })
                .await;
            (got, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send_text(&room, "wake up").await;
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(common::bodies(&got), vec!["wake up".to_owned()]);
    assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_send_on_another_instance_is_not_duplicated() {
    if !cluster::available() {
        return;
    }
    let c = cluster::Cluster::start(2, cluster::redis_cluster()).await;
    let alice = c.instances[0].register("alice").await;
    let room = alice.create_room(json!({})).await;
    let id = txn();
    let content = json!({"msgtype": "m.text", "body": "once"});
    let first = alice.send(&room, &id, content.clone()).await;
    let again = alice.on(&c.instances[1]).send(&room, &id, content).await;
    assert_eq!(first, again);
    c.shutdown().await;
}

/// Alice (instance 1) sends `n` messages while bob reads part of them from
/// instance 3, which then dies; bob resumes on instance 2 with his last
/// next_batch and must end with every message exactly once.
async fn resume_after_instance_3_dies(
    c: &mut cluster::Cluster,
    alice: &common::Client,
    bob: &common::Client,
    bob_sync: &mut SyncCursor,
    room: &str,
    n: usize,
) {
    let sent = texts("m", n);
    let sender = {
        let (alice, room, sent) = (alice.clone(), room.to_owned(), sent.clone());
        tokio::spawn(async move {
            for t in &sent {
                alice.send_text(&room, t).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let part = bob_sync
        .collect_until(room, Duration::from_secs(20), |g| {
            common::bodies(g).len() >= 10
        })
        .await;
    c.instances[2].stop().await;
    bob_sync.client = bob.on(&c.instances[1]);
    let have = common::bodies(&part).len();
    let rest = bob_sync
        .collect_until(room, Duration::from_secs(30), |g| {
            have + common::bodies(g).len() >= sent.len()
        })
        .await;
    sender.await.unwrap();
    let mut got = common::bodies(&part);
    got.extend(common::bodies(&rest));
    assert_exactly_once(&got, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_of_a_dead_instance_resume_on_another_and_miss_nothing() {
    if !cluster::available() {
        return;
    }
    let mut c = cluster::Cluster::start(3, cluster::redis_cluster()).await;
    let alice = c.instances[0].register("alice").await;
    let bob = c.instances[2].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, Some(FILTER)).await;

    resume_after_instance_3_dies(&mut c, &alice, &bob, &mut bob_sync, &room, 60).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_redis_slows_delivery_but_loses_nothing() {
    if !cluster::available() {
        return;
    }
    let mut redis = cluster::RedisServer::start();
    let c = cluster::Cluster::start(2, vec![redis.seed()]).await;
    let alice = c.instances[0].register("alice").await;
    let bob = c.instances[1].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, Some(FILTER)).await;
    alice.send_text(&room, "before").await;
    bob_sync
        .collect_until(&room, Duration::from_secs(10), |g| {
            common::bodies(g).len() == 1
        })
        .await;

    redis.kill();
    let during = texts("during", 10);
    for t in &during {
        alice.send_text(&room, t).await;
    }
    let got = bob_sync
        .collect_until(&room, Duration::from_secs(20), |g| {
            common::bodies(g).len() >= 10
        })
        .await;
    assert_exactly_once(&common::bodies(&got), &during);

    redis.start_again();
    // Wake-ups resume once both instances are back on the channel.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = texts("after", 5);
    for t in &after {
        alice.send_text(&room, t).await;
    }
    let got = bob_sync
        .collect_until(&room, Duration::from_secs(10), |g| {
            common::bodies(g).len() >= 5
        })
        .await;
    assert_exactly_once(&common::bodies(&got), &after);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_server_gets_what_both_instances_send_exactly_once() {
    if !cluster::available() {
        return;
    }
    let (fed, db) = cluster::federation_with_two_instance_hs1(cluster::redis_cluster()).await;
    let alice = fed.servers[0].register("alice").await;
    let charlie = fed.servers[2].register("charlie").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let joined = common::federation::join_via(&charlie, &room, &fed.server_name(0)).await;
    assert_eq!(joined.status, 200, "remote join: {:?}", joined.body);
    // Alice talks through both instances of hs1, alternately.
    let alice_on_two = alice.on(&fed.servers[1]);
    let sent = texts("fed", 20);
    for (i, t) in sent.iter().enumerate() {
        let through = if i % 2 == 0 { &alice } else { &alice_on_two };
        through.send_text(&room, t).await;
    }
    let got = common::federation::wait_for_bodies(&charlie, &room, |b| b.len() >= sent.len()).await;
    assert_exactly_once(&got, &sent);
    fed.shutdown().await;
    db.drop_shared().await;
}

// Shared ephemeral state: typing, presence, receipts, UIA sessions, nonces,
// push rule caches and rate limits (docs/scale-out.md, "What lives in Redis").

const V3: &str = "/_matrix/client/v3";

/// The room's ephemeral events of one type in a sync response.
fn ephemeral(sync: &serde_json::Value, room: &str, kind: &str) -> Vec<serde_json::Value> {
    common::joined_room(sync, room)
        .and_then(|r| r["ephemeral"]["events"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

fn typing_users(sync: &serde_json::Value, room: &str) -> Option<Vec<String>> {
    ephemeral(sync, room, "m.typing")
        .last()
        .map(|e| common::strings(&e["content"]["user_ids"]))
}

/// Long-polls until `pred` holds for a response; panics after `limit`.
async fn sync_until(
    cursor: &mut SyncCursor,
    limit: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "condition not met within {limit:?}");
        let body = cursor.next(left.as_millis().min(5_000) as u64).await;
        if pred(&body) {
            return body;
        }
    }
}

/// The presence `viewer` gets from `GET /presence/{user}/status`.
async fn presence_of(viewer: &common::Client, user: &str) -> String {
    let path = format!("{V3}/presence/{}/status", common::enc(user));
    viewer.get(&path).await.ok()["presence"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Polls `GET /presence` until it answers `want`; panics after 10 s.
async fn wait_for_presence(viewer: &common::Client, user: &str, want: &str) {
    for _ in 0..50 {
        if presence_of(viewer, user).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{user} did not become {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_on_one_instance_shows_on_another_and_times_out() {
    if !cluster::available() {
        return;
    }
    let c = cluster::Cluster::start(3, cluster::redis_cluster()).await;
    let alice = c.instances[0].register("alice").await;
    let bob = c.instances[2].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;
    let path = format!(
        "{V3}/rooms/{}/typing/{}",
        common::enc(&room),
        common::enc(&alice.user_id)
    );

    alice
        .put(&path, json!({"typing": true, "timeout": 30000}))
        .await
        .ok();
    sync_until(&mut bob_sync, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![alice.user_id.clone()])
    })
    .await;
    // Stopped through another instance than the one that started it.
    alice
        .on(&c.instances[1])
        .put(&path, json!({"typing": false}))
        .await
        .ok();
    sync_until(&mut bob_sync, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![])
    })
    .await;

    // A timeout ends it on every instance, without another request.
    alice
        .put(&path, json!({"typing": true, "timeout": 1000}))
        .await
        .ok();
    let started = std::time::Instant::now();
    sync_until(&mut bob_sync, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![alice.user_id.clone()])
    })
    .await;
    sync_until(&mut bob_sync, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![])
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "typing ended early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "typing expired late: {took:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_is_seen_across_instances_and_counts_every_connection() {
    if !cluster::available() {
        return;
    }
    let c = cluster::Cluster::start_with(3, cluster::redis_cluster(), |cfg| {
        cfg.presence.offline_grace_ms = 300;
    })
    .await;
    let alice = c.instances[0].register("alice").await;
    let bob = c.instances[2].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;

    // Alice's sync on instance 1 makes her online for bob on instance 3.
    alice.sync(None, Some(0), None).await;
    sync_until(&mut bob_sync, Duration::from_secs(10), |s| {
        s["presence"]["events"].as_array().is_some_and(|a| {
            a.iter().any(|e| {
                e["sender"] == alice.user_id.as_str() && e["content"]["presence"] == "online"
            })
        })
    })
    .await;
    assert_eq!(presence_of(&bob, &alice.user_id).await, "online");
    // Her only connection closed: offline after the grace period.
    wait_for_presence(&bob, &alice.user_id, "offline").await;

    // She sets herself online, then holds two long-polls that leave her
    // presence alone (`set_presence=offline`), on instances 2 and 1. The one
    // on instance 1 ends well before the other: she stays online until the
    // second one is gone too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = format!("{V3}/presence/{}/status", common::enc(&alice.user_id));
    alice.put(&status, json!({"presence": "online"})).await.ok();
    let quiet_sync = |since: &str, timeout: u64| {
        format!(
            "{V3}/sync?since={}&timeout={timeout}&set_presence=offline",
            common::enc(since)
        )
    };
    let since = alice
        .get(&quiet_sync("", 0).replace("since=&", ""))
        .await
        .ok()["next_batch"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let long = {
        let alice = alice.on(&c.instances[1]);
        let path = quiet_sync(&since, 4_000);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            alice.get(&path).await.ok();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.get(&quiet_sync(&since, 800)).await.ok();
    assert!(
        !long.is_finished(),
        "the long-poll on instance 2 ended early"
    );
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            presence_of(&bob, &alice.user_id).await,
            "online",
            "offline while a connection on another instance was open"
        );
    }
    let held = long.await.unwrap();
    assert!(
        held >= Duration::from_millis(3_500),
        "the long-poll ended early, after {held:?}"
    );
    wait_for_presence(&bob, &alice.user_id, "offline").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_posted_on_one_instance_reaches_a_sync_on_another() {
    if !cluster::available() {
        return;
    }
    let c = cluster::Cluster::start(3, cluster::redis_cluster()).await;
    let alice = c.instances[0].register("alice").await;
    let bob = c.instances[2].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let event = alice.send_text(&room, "read me").await;
    let (mut alice_sync, _) = SyncCursor::initial(&alice, None).await;
    let path = format!(
        "{V3}/rooms/{}/receipt/m.read/{}",
        common::enc(&room),
        common::enc(&event)
    );
    bob.post(&path, json!({})).await.ok();
    let s = sync_until(&mut alice_sync, Duration::from_secs(10), |s| {
        !ephemeral(s, &room, "m.receipt").is_empty()
    })
    .await;
    let receipt = &ephemeral(&s, &room, "m.receipt")[0];
    assert!(
        receipt["content"][&event]["m.read"][&bob.user_id]["ts"].is_i64(),
        "{receipt}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_flows_and_nonces_continue_on_another_instance() {
    if !cluster::available() {
        return;
    }
    let c = cluster::Cluster::start_with(3, cluster::redis_cluster(), |cfg| {
        cfg.registration.shared_secret = Some("s3cret".into());
    })
    .await;
    let (one, three) = (&c.instances[0], &c.instances[2]);
    // UIA: started on instance 1, finished on instance 3.
    let body = json!({"username": "carol", "password": common::PASSWORD});
    let first = one.post(&format!("{V3}/register"), body.clone()).await;
    assert_eq!(first.status, 401, "{first:?}");
    let session = first.body["session"].as_str().unwrap().to_owned();
    let mut done = body.clone();
    done["auth"] = json!({"type": "m.login.dummy", "session": session});
    let ok = three
        .post(&format!("{V3}/register"), done.clone())
        .await
        .ok();
    assert_eq!(ok["user_id"], three.user_id("carol"));
    // The session is gone everywhere once used.
    let mut again = done;
    again["username"] = json!("carol2");
    three
        .post(&format!("{V3}/register"), again)
        .await
        .assert_error(401, "M_UNKNOWN");

    // Shared-secret registration: nonce from instance 1, used on instance 3, once.
    let nonce = one.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let mac = common::admin_register_mac("s3cret", &nonce, "dave", "pw-dave", false);
    let req = json!({"nonce": nonce, "username": "dave", "password": "pw-dave", "mac": mac});
    let made = three
        .post("/_synapse/admin/v1/register", req.clone())
        .await
        .ok();
    assert_eq!(made["user_id"], three.user_id("dave"));
    let replay = c.instances[1]
        .post("/_synapse/admin/v1/register", req)
        .await;
    assert_eq!(replay.status, 400, "a nonce was used twice: {replay:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_rule_edits_and_rate_limits_apply_on_every_instance() {
    if !cluster::available() {
        return;
    }
    let c = cluster::Cluster::start_with(3, cluster::redis_cluster(), |cfg| {
        cfg.rate_limits.enabled = true;
        cfg.rate_limits.send = engine::config::Bucket {
            per_second: 0.05,
            burst: 3.0,
        };
    })
    .await;
    let alice = c.instances[0].register("alice").await;
    let on_three = alice.on(&c.instances[2]);
    let rule = format!("{V3}/pushrules/global/override/.m.rule.master/enabled");
    // Instance 3 caches her rules, then they change through instance 1.
    assert_eq!(on_three.get(&rule).await.ok()["enabled"], false);
    alice.put(&rule, json!({"enabled": true})).await.ok();
    let mut seen = false;
    for _ in 0..20 {
        if on_three.get(&rule).await.ok()["enabled"] == true {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "instance 3 kept serving the old push rules");

    // One bucket for her sends, whichever instance they reach.
    let room = alice.create_room(json!({})).await;
    let content = json!({"msgtype": "m.text", "body": "hi"});
    for (i, client) in [&alice, &alice.on(&c.instances[1]), &on_three]
        .into_iter()
        .enumerate()
    {
        let sent = client
            .send_event(&room, "m.room.message", &txn(), content.clone())
            .await;
        assert_eq!(sent.status, 200, "send {i}: {sent:?}");
    }
    let limited = alice
        .on(&c.instances[1])
        .send_event(&room, "m.room.message", &txn(), content)
        .await;
    limited.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.body["retry_after_ms"].as_u64().unwrap_or(0) > 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_typing_and_presence_requests_still_succeed() {
    if !cluster::available() {
        return;
    }
    let mut redis = cluster::RedisServer::start();
    let c = cluster::Cluster::start(2, vec![redis.seed()]).await;
    let alice = c.instances[0].register("alice").await;
    let bob = c.instances[1].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let (mut alice_sync, _) = SyncCursor::initial(&alice, None).await;

    redis.kill();
    let started = std::time::Instant::now();
    let typing = format!(
        "{V3}/rooms/{}/typing/{}",
        common::enc(&room),
        common::enc(&alice.user_id)
    );
    alice
        .put(&typing, json!({"typing": true, "timeout": 30000}))
        .await
        .ok();
    let presence = format!("{V3}/presence/{}/status", common::enc(&alice.user_id));
    alice
        .put(
            &presence,
            json!({"presence": "unavailable", "status_msg": "away"}),
        )
        .await
        .ok();
    assert_eq!(presence_of(&alice, &alice.user_id).await, "unavailable");
    presence_of(&bob, &alice.user_id).await;
    bob.sync(None, Some(0), None).await;
    // The instance that took the change still shows it to its own users.
    sync_until(&mut alice_sync, Duration::from_secs(10), |s| {
        typing_users(s, &room) == Some(vec![alice.user_id.clone()])
    })
    .await;
    // A registration flow still works within one instance.
    c.instances[0].register("carol").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "requests stalled without Redis: {took:?}"
    );

    // Once Redis is back, typing crosses instances again.
    redis.start_again();
    let (mut bob_sync, _) = SyncCursor::initial(&bob, None).await;
    let mut shown = false;
    for _ in 0..20 {
        alice.put(&typing, json!({"typing": false})).await.ok();
        alice
            .put(&typing, json!({"typing": true, "timeout": 30000}))
            .await
            .ok();
        let s = bob_sync.next(500).await;
        if typing_users(&s, &room) == Some(vec![alice.user_id.clone()]) {
            shown = true;
            break;
        }
    }
    assert!(shown, "typing did not cross instances after Redis returned");
    c.shutdown().await;
}

/// The scale-out layout in full: three instances on one PostgreSQL database,
/// the Redis Cluster and one CQL keyspace holding the message bodies. Users
/// on instances 1 and 3 talk at once; both see one history, exactly once; a
/// new device on instance 2 pages all of it back from the CQL log; clients of
/// an instance that dies resume on another and miss nothing.
#[cfg(feature = "cql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_one_cql_timeline() {
    if !cluster::available() {
        return;
    }
    let url = std::env::var("HS_TEST_CQL_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("HS_TEST_SCALEOUT=1 with the cql feature needs HS_TEST_CQL_URL");
    let cql = engine::config::Cql {
        contact_points: vec![url],
        keyspace: format!("hs_scale_{:016x}", rand::random::<u64>()),
        replication_factor: 1,
        ..engine::config::Cql::default()
    };
    let mut c = cluster::Cluster::start_with(3, cluster::redis_cluster(), {
        let cql = cql.clone();
        move |conf| conf.storage.cql = cql.clone()
    })
    .await;
    // A keyspace made by a cluster records the cluster's bucket shift.
    let log = engine::storage::cql::CqlEventLog::connect(&cql)
        .await
        .expect("connect to the test keyspace");
    assert_eq!(log.bucket_shift(), engine::config::CLUSTER_BUCKET_SHIFT);

    let alice = c.instances[0].register("alice").await;
    let bob = c.instances[2].register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await;
    let (mut bob_sync, _) = SyncCursor::initial(&bob, Some(FILTER)).await;
    let (mut alice_sync, _) = SyncCursor::initial(&alice, Some(FILTER)).await;
    let (from_alice, from_bob) = (texts("alice", 30), texts("bob", 30));
    tokio::join!(
        async {
            for t in &from_alice {
                alice.send_text(&room, t).await;
            }
        },
        async {
            for t in &from_bob {
                bob.send_text(&room, t).await;
            }
        }
    );
    let everything = |got: &[serde_json::Value]| common::bodies(got).len() == 60;
    let at_bob = bob_sync
        .collect_until(&room, Duration::from_secs(20), everything)
        .await;
    let at_alice = alice_sync
        .collect_until(&room, Duration::from_secs(20), everything)
        .await;
    let by = |got: &[String], who: &str| -> Vec<String> {
        got.iter().filter(|b| b.starts_with(who)).cloned().collect()
    };
    for got in [common::bodies(&at_bob), common::bodies(&at_alice)] {
        assert_exactly_once(&by(&got, "alice"), &from_alice);
        assert_exactly_once(&by(&got, "bob"), &from_bob);
    }
    assert_eq!(common::event_ids(&at_bob), common::event_ids(&at_alice));

    // History survives re-login: a new device on instance 2 pages the whole
    // room back, bodies and all, in the order the syncs delivered it.
    let carol = c.instances[1].login("bob", common::PASSWORD).await;
    let mut back = carol.paginate_all(&room, None, "b", 7).await;
    back.reverse();
    let messages: Vec<_> = back
        .into_iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert_eq!(common::event_ids(&messages), common::event_ids(&at_bob));
    assert_eq!(common::bodies(&messages), common::bodies(&at_bob));
    let middle = common::event_ids(&at_bob)[30].clone();
    let ctx = carol.context(&room, &middle, 4).await.ok();
    assert_eq!(ctx["event"]["event_id"], middle.as_str());
    assert_eq!(ctx["events_before"].as_array().map(Vec::len), Some(2));
    assert_eq!(ctx["events_after"].as_array().map(Vec::len), Some(2));

    // Instance 3 dies mid-stream; bob resumes on instance 2 with his token.
    resume_after_instance_3_dies(&mut c, &alice, &bob, &mut bob_sync, &room, 40).await;

    c.shutdown().await;
    let _ = log
        .session()
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", cql.keyspace), ())
        .await;
}
