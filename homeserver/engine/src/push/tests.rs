//! Table-driven tests of the default rules and every condition kind, with the
//! spec's own examples.

use serde_json::{json, Value};

use super::{
    conditions::{split_path, Condition, EventContext, Recipient},
    evaluator::CompiledRules,
    rules::{server_default, PushRule, Ruleset, KINDS},
};

const ALICE: &str = "@alice:example.org";

fn ctx(event: &Value, members: u64, sender_power: i64) -> EventContext<'_> {
    EventContext {
        event,
        member_count: members,
        sender_power,
        notification_levels: &Value::Null,
    }
}

fn alice() -> Recipient<'static> {
    Recipient {
        user_id: ALICE,
        display_name: Some("Alice Liddell"),
    }
}

fn msg(body: &str) -> Value {
    json!({"type": "m.room.message", "sender": "@bob:example.org", "room_id": "!r:example.org",
           "content": {"msgtype": "m.text", "body": body}})
}

/// The matching default rule for alice, its notify and highlight.
fn evaluate(event: &Value, members: u64, sender_power: i64) -> Option<(String, bool, bool)> {
    let rules = CompiledRules::compile(&server_default(ALICE));
    rules
        .evaluate(&ctx(event, members, sender_power), &alice())
        .map(|o| (o.rule_id, o.notify, o.highlight))
}

#[test]
fn default_ruleset_is_the_specs_in_order() {
    let r = server_default(ALICE);
    let ids = |rules: &[PushRule]| rules.iter().map(|r| r.rule_id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&r.override_),
        [
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.is_room_mention",
            ".m.rule.tombstone",
            ".m.rule.reaction",
            ".m.rule.room.server_acl",
            ".m.rule.suppress_edits",
        ]
    );
    assert!(r.content.is_empty(), "no legacy .m.rule.contains_user_name");
    assert_eq!(
        ids(&r.underride),
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ]
    );
    assert!(!r.override_[0].enabled, "master is off by default");
    assert!(KINDS.iter().all(|k| r.kind(k).is_some()));
}

/// A case name, the event, the member count, the sender's power level, and
/// the expected matching rule with its notify and highlight.
type Case = (
    &'static str,
    Value,
    u64,
    i64,
    Option<(&'static str, bool, bool)>,
);

#[test]
fn each_default_rule() {
    let mentions = |users: Value, room: bool| {
        json!({"type": "m.room.message", "sender": "@bob:example.org",
               "content": {"body": "hi", "m.mentions": {"user_ids": users, "room": room}}})
    };
    let state = |kind: &str, key: &str| json!({"type": kind, "state_key": key, "sender": "@bob:example.org", "content": {}});
    let cases: Vec<Case> = vec![
        (
            "notice",
            json!({"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "alice"}}),
            5,
            0,
            Some((".m.rule.suppress_notices", false, false)),
        ),
        (
            "invite for me",
            json!({"type": "m.room.member", "state_key": ALICE, "content": {"membership": "invite"}}),
            5,
            0,
            Some((".m.rule.invite_for_me", true, false)),
        ),
        (
            "someone else's invite",
            json!({"type": "m.room.member", "state_key": "@carol:example.org", "content": {"membership": "invite"}}),
            5,
            0,
            Some((".m.rule.member_event", false, false)),
        ),
        (
            "member event",
            json!({"type": "m.room.member", "state_key": "@bob:example.org", "content": {"membership": "join"}}),
            5,
            0,
            Some((".m.rule.member_event", false, false)),
        ),
        (
            "user mention",
            mentions(json!([ALICE]), false),
            5,
            0,
            Some((".m.rule.is_user_mention", true, true)),
        ),
        (
            "display name in the body is no mention (legacy rule gone)",
            msg("hey Alice Liddell!"),
            5,
            0,
            Some((".m.rule.message", true, false)),
        ),
        (
            "room mention by a moderator",
            mentions(json!([]), true),
            5,
            50,
            Some((".m.rule.is_room_mention", true, true)),
        ),
        (
            "room mention without power",
            mentions(json!([]), true),
            5,
            0,
            Some((".m.rule.message", true, false)),
        ),
        (
            "@room in the body is no room mention (legacy rule gone)",
            msg("@room lunch"),
            5,
            100,
            Some((".m.rule.message", true, false)),
        ),
        (
            "tombstone",
            state("m.room.tombstone", ""),
            5,
            0,
            Some((".m.rule.tombstone", true, true)),
        ),
        (
            "tombstone with a state key",
            state("m.room.tombstone", "x"),
            5,
            0,
            None,
        ),
        (
            "reaction",
            json!({"type": "m.reaction", "content": {}}),
            2,
            0,
            Some((".m.rule.reaction", false, false)),
        ),
        (
            "server acl",
            state("m.room.server_acl", ""),
            5,
            0,
            Some((".m.rule.room.server_acl", false, false)),
        ),
        (
            "edit",
            json!({"type": "m.room.message", "content": {"body": "* x", "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}}),
            2,
            0,
            Some((".m.rule.suppress_edits", false, false)),
        ),
        (
            "user name in the body is no mention (legacy rule gone)",
            msg("is alice there?"),
            5,
            0,
            Some((".m.rule.message", true, false)),
        ),
        (
            "call",
            json!({"type": "m.call.invite", "content": {}}),
            2,
            0,
            Some((".m.rule.call", true, false)),
        ),
        (
            "encrypted 1:1",
            json!({"type": "m.room.encrypted", "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}}),
            2,
            0,
            Some((".m.rule.encrypted_room_one_to_one", true, false)),
        ),
        (
            "message 1:1",
            msg("hello"),
            2,
            0,
            Some((".m.rule.room_one_to_one", true, false)),
        ),
        (
            "message in a group",
            msg("hello"),
            3,
            0,
            Some((".m.rule.message", true, false)),
        ),
        (
            "encrypted in a group",
            json!({"type": "m.room.encrypted", "content": {"ciphertext": "x"}}),
            3,
            0,
            Some((".m.rule.encrypted", true, false)),
        ),
        (
            "encrypted mention is on the envelope only",
            json!({"type": "m.room.encrypted", "content": {"ciphertext": "alice", "m.mentions": {"user_ids": [ALICE]}}}),
            3,
            0,
            Some((".m.rule.is_user_mention", true, true)),
        ),
        (
            "topic change matches nothing",
            state("m.room.topic", ""),
            3,
            0,
            None,
        ),
    ];
    for (name, event, members, power, expected) in cases {
        let got = evaluate(&event, members, power);
        let expected = expected.map(|(id, n, h)| (id.to_owned(), n, h));
        assert_eq!(got, expected, "case: {name}");
    }
}

#[test]
fn master_rule_silences_everything() {
    let mut rules = server_default(ALICE);
    rules.override_[0].enabled = true;
    let out = CompiledRules::compile(&rules)
        .evaluate(&ctx(&msg("hi alice"), 2, 0), &alice())
        .map(|o| (o.rule_id, o.notify));
    assert_eq!(out, Some((".m.rule.master".to_owned(), false)));
}

#[test]
fn event_match_spec_examples() {
    let topic =
        |t: Value| json!({"type": "m.room.topic", "state_key": "", "content": {"topic": t}});
    let cond = Condition::compile(
        &json!({"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}),
    );
    for (value, expected) in [
        (json!("Lunch plans"), true),
        (json!("LUNCH"), true),
        (json!(" lunch"), false),
        (json!("lunc"), false),
        (Value::Null, false),
    ] {
        let ev = topic(value.clone());
        assert_eq!(cond.matches(&ctx(&ev, 2, 0), &alice()), expected, "{value}");
    }
    let body = Condition::compile(
        &json!({"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}),
    );
    for (text, expected) in [
        ("An example event.", true),
        ("exple", true),
        ("An exciting triple-whammy", true),
        ("examples", false),
        ("an_example", false),
    ] {
        let ev = msg(text);
        assert_eq!(body.matches(&ctx(&ev, 2, 0), &alice()), expected, "{text}");
    }
    // `*` on an absent property does not match.
    let star =
        Condition::compile(&json!({"kind": "event_match", "key": "content.nope", "pattern": "*"}));
    assert!(!star.matches(&ctx(&msg("x"), 2, 0), &alice()));
}

#[test]
fn event_property_is_and_contains_spec_examples() {
    let create = json!({"type": "m.room.create", "state_key": "", "content": {"m.federate": true, "room_version": "1"}});
    for (value, expected) in [
        (json!(true), true),
        (json!("true"), false),
        (json!(1), false),
    ] {
        let c = Condition::compile(
            &json!({"kind": "event_property_is", "key": "content.m\\.federate", "value": value}),
        );
        assert_eq!(
            c.matches(&ctx(&create, 2, 0), &alice()),
            expected,
            "{value}"
        );
    }
    let alias = json!({"type": "m.room.canonical_alias", "state_key": "",
        "content": {"alias": "#somewhere:localhost", "alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]}});
    for (value, expected) in [
        (json!("#myroom:example.com"), true),
        (json!(":example.com"), false),
    ] {
        let c = Condition::compile(
            &json!({"kind": "event_property_contains", "key": "content.alt_aliases", "value": value}),
        );
        assert_eq!(c.matches(&ctx(&alias, 2, 0), &alice()), expected, "{value}");
    }
    // Compound values are not compared.
    let c =
        Condition::compile(&json!({"kind": "event_property_is", "key": "content", "value": {}}));
    assert!(!c.matches(&ctx(&alias, 2, 0), &alice()));
}

#[test]
fn room_member_count_operators() {
    let ev = msg("x");
    for (is, members, expected) in [
        ("2", 2, true),
        ("==2", 3, false),
        ("<10", 9, true),
        ("<10", 10, false),
        (">5", 6, true),
        (">=5", 5, true),
        ("<=10", 11, false),
        ("ten", 10, false),
    ] {
        let c = Condition::compile(&json!({"kind": "room_member_count", "is": is}));
        assert_eq!(
            c.matches(&ctx(&ev, members, 0), &alice()),
            expected,
            "{is} with {members}"
        );
    }
}

#[test]
fn sender_notification_permission_reads_power_levels() {
    let ev = msg("x");
    let c = Condition::compile(&json!({"kind": "sender_notification_permission", "key": "room"}));
    let levels = json!({"room": 20});
    for (power, levels, expected) in [
        (50, Value::Null, true),
        (49, Value::Null, false),
        (20, levels.clone(), true),
        (19, levels, false),
    ] {
        let cx = EventContext {
            event: &ev,
            member_count: 3,
            sender_power: power,
            notification_levels: &levels,
        };
        assert_eq!(c.matches(&cx, &alice()), expected, "{power}");
    }
}

#[test]
fn contains_display_name_needs_word_boundaries() {
    let c = Condition::compile(&json!({"kind": "contains_display_name"}));
    for (body, expected) in [
        ("ping alice liddell", true),
        ("Alice Liddell: hi", true),
        ("xAlice Liddell", false),
        ("Alice", false),
    ] {
        assert_eq!(
            c.matches(&ctx(&msg(body), 3, 0), &alice()),
            expected,
            "{body}"
        );
    }
    let nameless = Recipient {
        user_id: ALICE,
        display_name: None,
    };
    assert!(!c.matches(&ctx(&msg("Alice Liddell"), 3, 0), &nameless));
}

#[test]
fn unknown_conditions_never_match() {
    for c in [
        json!({"kind": "org.example.custom"}),
        json!({"kind": "event_match", "key": "type"}),
        json!({"kind": "room_member_count"}),
    ] {
        assert!(
            !Condition::compile(&c).matches(&ctx(&msg("x"), 2, 0), &alice()),
            "{c}"
        );
    }
}

#[test]
fn dotted_paths_with_escapes() {
    assert_eq!(
        split_path("content.m\\.mentions.user_ids"),
        ["content", "m.mentions", "user_ids"]
    );
    assert_eq!(split_path("a\\\\.b"), ["a\\", "b"]);
    assert_eq!(split_path("type"), ["type"]);
}

#[test]
fn user_rules_room_and_sender_and_before_after() {
    let mut rules = server_default(ALICE);
    let simple = |id: &str, actions: Value| PushRule {
        rule_id: id.into(),
        default: false,
        enabled: true,
        actions: actions.as_array().cloned().unwrap_or_default(),
        conditions: None,
        pattern: None,
    };
    rules
        .put_user_rule("room", simple("!r:example.org", json!([])), None, None)
        .unwrap();
    // A room rule with no actions silences the room...
    assert_eq!(
        CompiledRules::compile(&rules)
            .evaluate(&ctx(&msg("hi"), 3, 0), &alice())
            .map(|o| o.notify),
        Some(false)
    );
    // ...but not mentions (override rules come first).
    let mention = json!({"type": "m.room.message", "room_id": "!r:example.org", "content": {"body": "x", "m.mentions": {"user_ids": [ALICE]}}});
    assert!(
        CompiledRules::compile(&rules)
            .evaluate(&ctx(&mention, 3, 0), &alice())
            .unwrap()
            .highlight
    );

    let cond = |id: &str| PushRule {
        conditions: Some(vec![
            json!({"kind": "event_match", "key": "content.body", "pattern": id}),
        ]),
        ..simple(id, json!(["notify"]))
    };
    rules
        .put_user_rule("override", cond("a"), None, None)
        .unwrap();
    rules
        .put_user_rule("override", cond("b"), None, None)
        .unwrap();
    rules
        .put_user_rule("override", cond("c"), None, Some("b"))
        .unwrap();
    rules
        .put_user_rule("override", cond("d"), Some("a"), None)
        .unwrap();
    let ids: Vec<_> = rules
        .override_
        .iter()
        .take(5)
        .map(|r| r.rule_id.as_str())
        .collect();
    assert_eq!(ids, [".m.rule.master", "b", "c", "d", "a"]);
    let err = rules
        .put_user_rule("override", cond("e"), Some("nope"), None)
        .unwrap_err();
    assert_eq!(err.errcode, "M_NOT_FOUND");
    assert!(
        rules.get("override", "e").is_none(),
        "a failed put changes nothing"
    );
    assert_eq!(
        rules
            .delete_user_rule("override", ".m.rule.master")
            .unwrap_err()
            .errcode,
        "M_FORBIDDEN"
    );
    rules.delete_user_rule("override", "c").unwrap();
    assert_eq!(
        rules.delete_user_rule("override", "c").unwrap_err().errcode,
        "M_NOT_FOUND"
    );
}

#[test]
fn stored_rules_keep_user_changes_and_gain_new_defaults() {
    let mut stored = server_default(ALICE);
    stored
        .underride
        .retain(|r| r.rule_id != ".m.rule.encrypted");
    stored.override_[1].enabled = false;
    stored.underride[0].actions = vec![json!("notify")];
    let merged = stored.with_server_defaults(ALICE);
    assert!(merged.get("underride", ".m.rule.encrypted").is_some());
    assert!(
        !merged
            .get("override", ".m.rule.suppress_notices")
            .unwrap()
            .enabled
    );
    assert_eq!(
        merged.get("underride", ".m.rule.call").unwrap().actions,
        vec![json!("notify")]
    );
}

/// The spec's server-default rules ("Predefined Rules"), written out as the
/// spec lists them, for `@alice:example.org`: ids, order, conditions and
/// actions must match exactly.
#[test]
fn default_rules_match_the_spec_word_for_word() {
    let em =
        |key: &str, pattern: &str| json!({"kind": "event_match", "key": key, "pattern": pattern});
    let sound = |v: &str| json!({"set_tweak": "sound", "value": v});
    let highlight = json!({"set_tweak": "highlight"});
    let rule = |id: &str, enabled: bool, conditions: Value, actions: Value| json!({"rule_id": id, "default": true, "enabled": enabled, "conditions": conditions, "actions": actions});
    let expected = json!({
        "override": [
            rule(".m.rule.master", false, json!([]), json!([])),
            rule(".m.rule.suppress_notices", true, json!([em("content.msgtype", "m.notice")]), json!([])),
            rule(".m.rule.invite_for_me", true,
                json!([em("type", "m.room.member"), em("content.membership", "invite"), em("state_key", ALICE)]),
                json!(["notify", sound("default")])),
            rule(".m.rule.member_event", true, json!([em("type", "m.room.member")]), json!([])),
            rule(".m.rule.is_user_mention", true,
                json!([{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": ALICE}]),
                json!(["notify", sound("default"), highlight])),
            rule(".m.rule.is_room_mention", true,
                json!([{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
                       {"kind": "sender_notification_permission", "key": "room"}]),
                json!(["notify", highlight])),
            rule(".m.rule.tombstone", true,
                json!([em("type", "m.room.tombstone"), em("state_key", "")]),
                json!(["notify", highlight])),
            rule(".m.rule.reaction", true, json!([em("type", "m.reaction")]), json!([])),
            rule(".m.rule.room.server_acl", true,
                json!([em("type", "m.room.server_acl"), em("state_key", "")]), json!([])),
            rule(".m.rule.suppress_edits", true,
                json!([{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}]),
                json!([])),
        ],
        "content": [],
        "room": [],
        "sender": [],
        "underride": [
            rule(".m.rule.call", true, json!([em("type", "m.call.invite")]), json!(["notify", sound("ring")])),
            rule(".m.rule.encrypted_room_one_to_one", true,
                json!([{"kind": "room_member_count", "is": "2"}, em("type", "m.room.encrypted")]),
                json!(["notify", sound("default")])),
            rule(".m.rule.room_one_to_one", true,
                json!([{"kind": "room_member_count", "is": "2"}, em("type", "m.room.message")]),
                json!(["notify", sound("default")])),
            rule(".m.rule.message", true, json!([em("type", "m.room.message")]), json!(["notify"])),
            rule(".m.rule.encrypted", true, json!([em("type", "m.room.encrypted")]), json!(["notify"])),
        ],
    });
    assert_same_rules(
        &serde_json::to_value(server_default(ALICE)).unwrap(),
        &expected,
    );
}

/// The same comparison against ruma's own list of the spec's predefined
/// rules (`ruma::push::Ruleset::server_default`, written from spec v1.19
/// independently of ours; no unstable features are enabled).
#[test]
fn default_rules_match_rumas_predefined_rules() {
    let user = ruma::UserId::parse(ALICE).unwrap();
    let theirs = serde_json::to_value(ruma::push::Ruleset::server_default(&user)).unwrap();
    let ours = serde_json::to_value(server_default(ALICE)).unwrap();
    assert_same_rules(&ours, &theirs);
}

/// Rule ids in order per kind first (the clearest failure), then each rule.
fn assert_same_rules(got: &Value, want: &Value) {
    let rules = |v: &Value, kind: &str| v[kind].as_array().cloned().unwrap_or_default();
    for kind in KINDS {
        let (got, want) = (rules(got, kind), rules(want, kind));
        let ids = |rules: &[Value]| -> Vec<String> {
            rules.iter().map(|r| r["rule_id"].to_string()).collect()
        };
        assert_eq!(ids(&got), ids(&want), "{kind} rule ids");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{kind} {}", w["rule_id"]);
        }
    }
}

#[test]
fn delivery_retries_back_off_exponentially_up_to_the_cap() {
    let cfg = crate::config::Push {
        retry_initial_ms: 1_000,
        retry_max_ms: 60_000,
        ..Default::default()
    };
    let waits: Vec<u64> = (0..9)
        .map(|a| super::delivery::backoff_ms(&cfg, a))
        .collect();
    assert_eq!(
        waits,
        [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    );
    // A corrupt or huge attempt count neither overflows nor goes below the first wait.
    assert_eq!(super::delivery::backoff_ms(&cfg, i64::MAX), 60_000);
    assert_eq!(super::delivery::backoff_ms(&cfg, -3), 1_000);
}

#[test]
fn stored_legacy_mention_rules_are_dropped_but_user_rules_stay() {
    let stored: Ruleset = serde_json::from_value(json!({
        "override": [
            {"rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
             "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "@room"}],
             "actions": ["notify"]},
            {"rule_id": "name", "default": false, "enabled": true,
             "conditions": [{"kind": "contains_display_name"}], "actions": ["notify", {"set_tweak": "highlight"}]},
        ],
        "content": [
            {"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
             "pattern": "alice", "actions": ["notify"]},
            {"rule_id": "lunch", "default": false, "enabled": true, "pattern": "lunch", "actions": ["notify"]},
        ],
    }))
    .unwrap();
    let merged = stored.with_server_defaults(ALICE);
    assert!(merged.get("override", ".m.rule.roomnotif").is_none());
    assert!(merged
        .get("content", ".m.rule.contains_user_name")
        .is_none());
    assert_eq!(merged.content.len(), 1);
    // The user's own display-name rule (a deprecated but defined condition) still works.
    let rules = CompiledRules::compile(&merged);
    let hit = rules.evaluate(&ctx(&msg("Alice Liddell, lunch?"), 5, 0), &alice());
    assert_eq!(
        hit.map(|o| (o.rule_id, o.highlight)),
        Some(("name".to_owned(), true))
    );
    let lunch = rules.evaluate(&ctx(&msg("lunch at one"), 5, 0), &alice());
    assert_eq!(lunch.map(|o| o.rule_id), Some("lunch".to_owned()));
}
