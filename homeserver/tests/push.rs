//! Push notifications over HTTP: the `/pushrules/` API, unread counts in /sync
//! (per thread, reset by a read receipt from another device), GET
//! /notifications, pushers; and (in `push/delivery.rs`) delivery through the
//! real push-gateway process to local FCM- and APNs-protocol servers.

mod common;
#[path = "push/delivery.rs"]
mod delivery;
#[path = "push/gateway.rs"]
mod gateway;

use std::time::{Duration, Instant};

use common::{enc, txn, Body, Client, TestServer};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// Polls `probe` until it yields `Some`, for at most ten seconds.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A room's unread section of a fresh (initial) sync with `filter`.
async fn unread(client: &Client, room_id: &str, filter: Option<&str>) -> Value {
    let body = client.sync(None, Some(0), filter).await;
    let room = &body["rooms"]["join"][room_id];
    json!({
        "main": room["unread_notifications"],
        "threads": room.get("unread_thread_notifications").cloned().unwrap_or(json!({})),
    })
}

fn counts(n: i64, h: i64) -> Value {
    json!({"notification_count": n, "highlight_count": h})
}

/// Alice creates a private room and invites bob and carol, who join.
async fn group(server: &TestServer) -> (Client, Client, Client, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Lunch"}))
        .await;
    for c in [&bob, &carol] {
        alice.invite(&room, &c.user_id).await;
        c.join(&room).await;
    }
    (alice, bob, carol, room)
}

#[tokio::test]
async fn pushrules_api_reads_edits_and_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let rules = |c: &Client, p: &str| {
        let c = c.clone();
        let p = p.to_owned();
        async move { c.get(&format!("{V3}/pushrules/{p}")).await }
    };

    // The full default ruleset, master first.
    let all = rules(&alice, "").await.ok();
    assert_eq!(all["global"]["override"][0]["rule_id"], ".m.rule.master");
    assert_eq!(all["global"]["override"][0]["enabled"], false);
    let ids: Vec<&str> = all["global"]["underride"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rule_id"].as_str())
        .collect();
    assert!(ids.contains(&".m.rule.message") && ids.contains(&".m.rule.encrypted"));
    assert_eq!(rules(&alice, "global/").await.ok(), all["global"]);
    // The spec (v1.17 on) has no default content rule: mentions are m.mentions.
    assert_eq!(rules(&alice, "global/content/").await.ok(), json!([]));
    let one = rules(&alice, "global/override/.m.rule.is_user_mention")
        .await
        .ok();
    assert_eq!(one["conditions"][0]["value"], alice.user_id.as_str());

    // Initial sync carries m.push_rules as global account data.
    let sync = alice.sync(None, Some(0), None).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let pushed: Vec<&Value> = sync["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.push_rules")
        .collect();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0]["content"]["global"], all["global"]);

    // PUT user rules, with before/after.
    let put = |id: &str, query: &str, body: Value| {
        let c = alice.clone();
        let path = format!("{V3}/pushrules/global/override/{}{query}", enc(id));
        async move { c.put(&path, body).await }
    };
    let cake = |p: &str| json!({"conditions": [{"kind": "event_match", "key": "content.body", "pattern": p}], "actions": ["notify"]});
    put("cake", "", cake("cake")).await.ok();
    put("lie", "?before=cake", cake("cake*lie")).await.ok();
    put("pie", "?after=cake", cake("pie")).await.ok();
    let order: Vec<String> = rules(&alice, "global/override/")
        .await
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .take(4)
        .map(|r| r["rule_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, [".m.rule.master", "lie", "cake", "pie"]);

    // The change reaches the user's devices as account data.
    let inc = alice.sync(Some(&since), Some(0), None).await;
    let changed = inc["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules in incremental sync")
        .clone();
    assert_eq!(
        changed["content"]["global"]["override"][1]["rule_id"],
        "lie"
    );

    // Errors.
    put("x", "?before=nope", cake("x"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    put("x", "", json!({"conditions": []}))
        .await
        .assert_error(400, "M_BAD_JSON");
    put(".m.rule.custom", "", cake("x"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .request(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/override/x"),
            Body::Raw(b"{not json".to_vec()),
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    alice
        .put(
            &format!("{V3}/pushrules/global/bogus/x"),
            json!({"actions": []}),
        )
        .await
        .assert_error_one_of(&[(400, "M_INVALID_PARAM"), (400, "M_UNRECOGNIZED")]);
    alice
        .put(
            &format!("{V3}/pushrules/global/content/x"),
            json!({"actions": ["notify"]}),
        )
        .await
        .assert_error_one_of(&[(400, "M_BAD_JSON"), (400, "M_MISSING_PARAM")]);
    alice
        .put(
            &format!("{V3}/pushrules/global/room/notaroom"),
            json!({"actions": []}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    rules(&alice, "global/override/nope")
        .await
        .assert_error(404, "M_NOT_FOUND");
    rules(&alice, "global/bogus/")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .get(&format!("{V3}/pushrules/"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");

    // enabled and actions, on user and default rules.
    let base = format!("{V3}/pushrules/global/underride/.m.rule.message");
    alice
        .put(&format!("{base}/enabled"), json!({"enabled": false}))
        .await
        .ok();
    assert_eq!(
        alice.get(&format!("{base}/enabled")).await.ok(),
        json!({"enabled": false})
    );
    alice
        .put(&format!("{base}/enabled"), json!({"enabled": "no"}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .put(
            &format!("{base}/actions"),
            json!({"actions": ["notify", {"set_tweak": "sound", "value": "bell"}]}),
        )
        .await
        .ok();
    assert_eq!(
        alice.get(&format!("{base}/actions")).await.ok()["actions"][1]["value"],
        "bell"
    );
    alice
        .put(
            &format!("{V3}/pushrules/global/override/nope/actions"),
            json!({"actions": []}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .put(
            &format!("{V3}/pushrules/global/override/nope/enabled"),
            json!({"enabled": true}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");

    // DELETE.
    alice
        .delete(&format!("{V3}/pushrules/global/override/cake"))
        .await
        .ok();
    rules(&alice, "global/override/cake")
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .delete(&format!("{V3}/pushrules/global/override/cake"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .delete(&format!("{V3}/pushrules/global/override/.m.rule.master"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    server.shutdown().await;
}

#[tokio::test]
async fn counts_in_sync_per_thread_and_reset_by_receipt_from_another_device() {
    let server = TestServer::start().await;
    let (alice, bob, _carol, room) = group(&server).await;
    let bob_phone = server.login("bob", bob.password.as_deref().unwrap()).await;

    let first = alice.send_text(&room, "hello all").await;
    alice
        .send(
            &room,
            &txn(),
            json!({"msgtype": "m.text", "body": "bob?", "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    // A notice notifies nobody (.m.rule.suppress_notices).
    alice
        .send(&room, &txn(), json!({"msgtype": "m.notice", "body": "bot"}))
        .await;
    let root = alice.send_text(&room, "thread root").await;
    alice
        .send(
            &room,
            &txn(),
            json!({"msgtype": "m.text", "body": "in thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;

    eventually("bob's counts", || async {
        (unread(&bob, &room, None).await["main"] == counts(4, 1)).then_some(())
    })
    .await;
    // The sender is never notified of their own events.
    assert_eq!(unread(&alice, &room, None).await["main"], counts(0, 0));

    // With threaded counts the main timeline and the thread are separate.
    let threaded = bob
        .create_filter(json!({"room": {"timeline": {"unread_thread_notifications": true}}}))
        .await;
    let split = unread(&bob, &room, Some(&threaded)).await;
    assert_eq!(split["main"], counts(3, 1));
    assert_eq!(split["threads"], json!({ root.clone(): counts(1, 0) }));

    // An incremental sync on bob's laptop learns of the reset done on his phone.
    let since = bob.sync(None, Some(0), None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // A threaded receipt in the thread clears only the thread.
    let receipt = |c: &Client, kind: &str, event: &str, body: Value| {
        let c = c.clone();
        let path = format!("{V3}/rooms/{}/receipt/{kind}/{}", enc(&room), enc(event));
        async move { c.post(&path, body).await }
    };
    let reply = alice
        .send(
            &room,
            &txn(),
            json!({"msgtype": "m.text", "body": "more in thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    eventually("second thread notification", || async {
        (unread(&bob, &room, Some(&threaded)).await["threads"][&root] == counts(2, 0)).then_some(())
    })
    .await;
    receipt(
        &bob_phone,
        "m.read.private",
        &reply,
        json!({"thread_id": root}),
    )
    .await
    .ok();
    let split = unread(&bob, &room, Some(&threaded)).await;
    assert_eq!(split["main"], counts(3, 1));
    assert_eq!(split["threads"], json!({}));

    // An unthreaded m.read on the first message leaves the later ones unread.
    receipt(&bob_phone, "m.read", &first, json!({})).await.ok();
    assert_eq!(
        unread(&bob, &room, Some(&threaded)).await["main"],
        counts(2, 1)
    );

    // Reading the latest event clears everything, for every device.
    receipt(&bob_phone, "m.read", &root, json!({})).await.ok();
    let inc = bob.sync(Some(&since), Some(0), None).await;
    assert_eq!(
        inc["rooms"]["join"][&room]["unread_notifications"],
        counts(0, 0),
        "laptop's incremental sync: {inc}"
    );
    assert_eq!(unread(&bob, &room, None).await["main"], counts(0, 0));

    // A new message counts again.
    alice.send_text(&room, "again").await;
    eventually("a new count", || async {
        (unread(&bob, &room, None).await["main"] == counts(1, 0)).then_some(())
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn get_notifications_pages_and_filters_highlights() {
    let server = TestServer::start().await;
    let (alice, bob, _carol, room) = group(&server).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let mentions = if i == 3 {
            json!([bob.user_id])
        } else {
            json!([])
        };
        sent.push(
            alice
                .send(
                    &room,
                    &txn(),
                    json!({"msgtype": "m.text", "body": format!("m{i}"), "m.mentions": {"user_ids": mentions}}),
                )
                .await,
        );
    }
    // Five messages and bob's invite.
    eventually("six notifications", || async {
        let body = bob.get(&format!("{V3}/notifications")).await.ok();
        (body["notifications"].as_array()?.len() == 6).then_some(())
    })
    .await;
    let page = bob.get(&format!("{V3}/notifications?limit=3")).await.ok();
    let ids = |b: &Value| -> Vec<String> {
        b["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["event"]["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&page),
        [sent[4].clone(), sent[3].clone(), sent[2].clone()]
    );
    let first = &page["notifications"][0];
    assert_eq!(first["room_id"], room.as_str());
    assert_eq!(first["read"], false);
    assert_eq!(first["event"]["content"]["body"], "m4");
    assert!(first["actions"]
        .as_array()
        .unwrap()
        .contains(&json!("notify")));
    let from = page["next_token"].as_str().unwrap();
    let rest = bob
        .get(&format!("{V3}/notifications?limit=3&from={}", enc(from)))
        .await
        .ok();
    // Bob's invite notified him too (.m.rule.invite_for_me).
    assert_eq!(ids(&rest)[..2], [sent[1].clone(), sent[0].clone()]);
    let invite = &rest["notifications"][2]["event"];
    assert_eq!(
        (&invite["type"], &invite["state_key"]),
        (&json!("m.room.member"), &json!(bob.user_id))
    );
    assert_eq!(invite["content"]["membership"], "invite");
    assert!(rest.get("next_token").is_none());

    let highlights = bob
        .get(&format!("{V3}/notifications?only=highlight"))
        .await
        .ok();
    assert_eq!(ids(&highlights), [sent[3].clone()]);

    // Read receipts mark them read.
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&sent[2])),
        json!({}),
    )
    .await
    .ok();
    let after = bob.get(&format!("{V3}/notifications")).await.ok();
    let read: Vec<bool> = after["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read, [false, false, true, true, true, true]);
    bob.get(&format!("{V3}/notifications?from=abc"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // Alice was notified of nothing she sent.
    assert_eq!(
        alice.get(&format!("{V3}/notifications")).await.ok()["notifications"],
        json!([])
    );
    server.shutdown().await;
}

fn pusher(url: &str, pushkey: &str, format: Option<&str>) -> Value {
    let mut data = json!({"url": url});
    if let Some(f) = format {
        data["format"] = json!(f);
    }
    json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone",
        "lang": "en", "data": data,
    })
}

#[tokio::test]
async fn pushers_set_list_append_and_remove() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";
    let set = |c: &Client, body: Value| {
        let c = c.clone();
        async move { c.post(&format!("{V3}/pushers/set"), body).await }
    };
    let list = |c: &Client| {
        let c = c.clone();
        async move { c.get(&format!("{V3}/pushers")).await.ok()["pushers"].clone() }
    };
    assert_eq!(list(&alice).await, json!([]));
    set(&alice, pusher(url, "key-a", Some("event_id_only")))
        .await
        .ok();
    let listed = list(&alice).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["pushkey"], "key-a");
    assert_eq!(listed[0]["kind"], "http");
    assert_eq!(
        listed[0]["data"],
        json!({"url": url, "format": "event_id_only"})
    );
    assert_eq!(listed[0]["app_display_name"], "Example");

    // Updating keeps one pusher.
    let mut renamed = pusher(url, "key-a", None);
    renamed["device_display_name"] = json!("Tablet");
    set(&alice, renamed).await.ok();
    let listed = list(&alice).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["device_display_name"], "Tablet");

    // The same pushkey for bob with append: both keep it; without: alice loses it.
    let mut appended = pusher(url, "key-a", None);
    appended["append"] = json!(true);
    set(&bob, appended).await.ok();
    assert_eq!(list(&alice).await.as_array().unwrap().len(), 1);
    set(&bob, pusher(url, "key-a", None)).await.ok();
    assert_eq!(list(&alice).await, json!([]));
    assert_eq!(list(&bob).await.as_array().unwrap().len(), 1);

    // Removal with kind null.
    set(
        &bob,
        json!({"kind": null, "app_id": "org.example.app", "pushkey": "key-a"}),
    )
    .await
    .ok();
    assert_eq!(list(&bob).await, json!([]));

    // Bad input.
    set(
        &alice,
        pusher("https://push.example.org/elsewhere", "k", None),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    set(&alice, pusher("not a url", "k", None))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    set(&alice, pusher(url, "k", Some("weird")))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut email = pusher(url, "k", None);
    email["kind"] = json!("email");
    set(&alice, email)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut no_app = pusher(url, "k", None);
    no_app.as_object_mut().unwrap().remove("app_id");
    set(&alice, no_app).await.assert_error(400, "M_BAD_JSON");
    let mut long = pusher(url, &"k".repeat(513), None);
    long["append"] = json!(false);
    set(&alice, long).await.assert_error(400, "M_INVALID_PARAM");
    assert_eq!(list(&alice).await, json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn large_rooms_count_lazily_and_record_only_mentions() {
    // Rooms above two joined members are "large" here.
    let server = TestServer::start_with(|c| c.limits.large_room_members = 2).await;
    let (alice, bob, carol, room) = group(&server).await;
    alice.send_text(&room, "one").await;
    let two = alice.send_text(&room, "two").await;
    alice
        .send(
            &room,
            &txn(),
            json!({"msgtype": "m.text", "body": "carol!", "m.mentions": {"user_ids": [carol.user_id]}}),
        )
        .await;
    // Counts are computed at sync time from bob's rules.
    assert_eq!(unread(&bob, &room, None).await["main"], counts(3, 0));
    assert_eq!(unread(&carol, &room, None).await["main"], counts(3, 1));
    // The send path recorded only the mention (for carol), no message for
    // bob (their invites notified them both).
    let messages = |c: &Client| {
        let c = c.clone();
        async move {
            let n = c.get(&format!("{V3}/notifications")).await.ok()["notifications"].clone();
            n.as_array()
                .unwrap()
                .iter()
                .filter(|n| n["event"]["type"] == "m.room.message")
                .map(|n| n["event"]["content"]["body"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    eventually("carol's mention", || async {
        (messages(&carol).await == ["carol!"]).then_some(())
    })
    .await;
    assert_eq!(messages(&bob).await, Vec::<String>::new());
    // A read receipt moves the lazy count's starting point.
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&two)),
        json!({}),
    )
    .await
    .ok();
    assert_eq!(unread(&bob, &room, None).await["main"], counts(1, 0));
    server.shutdown().await;
}
