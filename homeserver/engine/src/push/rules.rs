//! Push rules (spec: "Push Rules"): the ruleset's JSON shape, the server-default
//! rules in the spec's order, and the edits the `/pushrules/` API makes.
//!
//! A user's ruleset is stored whole as the global account data `m.push_rules`
//! (the spec's own representation), so `/sync` delivers it to every device and
//! a client that reads account data sees exactly what the evaluator uses. On
//! load, [`Ruleset::with_server_defaults`] re-derives the server-default rules
//! from this file, keeping only the user's `enabled` and `actions` changes: a
//! server upgrade that adds or fixes a default rule reaches every user.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The five kinds, in the order the spec evaluates them.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushRule {
    pub rule_id: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    #[serde(default)]
    pub actions: Vec<Value>,
    /// `override` and `underride` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Value>>,
    /// `content` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

fn enabled_default() -> bool {
    true
}

/// A user's rules by kind, each list in priority order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ruleset {
    #[serde(default, rename = "override")]
    pub override_: Vec<PushRule>,
    #[serde(default)]
    pub content: Vec<PushRule>,
    #[serde(default)]
    pub room: Vec<PushRule>,
    #[serde(default)]
    pub sender: Vec<PushRule>,
    #[serde(default)]
    pub underride: Vec<PushRule>,
}

fn rule(id: &str, conditions: Value, actions: Value) -> PushRule {
    PushRule {
        rule_id: id.to_owned(),
        default: true,
        enabled: true,
        actions: actions.as_array().cloned().unwrap_or_default(),
        conditions: Some(conditions.as_array().cloned().unwrap_or_default()),
        pattern: None,
    }
}

fn event_match(key: &str, pattern: &str) -> Value {
    json!({"kind": "event_match", "key": key, "pattern": pattern})
}

fn notify_sound_highlight() -> Value {
    json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}])
}

/// The spec's server-default ruleset for `user_id`, every rule in the spec's
/// order (spec v1.19, "Predefined Rules").
///
/// Since v1.17 (MSC4210) the spec has no legacy mention rules
/// (`.m.rule.contains_display_name`, `.m.rule.roomnotif`,
/// `.m.rule.contains_user_name`): mentions notify through `m.mentions` only.
/// Rulesets stored before lose them on load ([`Ruleset::with_server_defaults`]);
/// the `contains_display_name` condition still works in users' own rules.
pub fn server_default(user_id: &str) -> Ruleset {
    let mut master = rule(".m.rule.master", json!([]), json!([]));
    master.enabled = false;
    let override_ = vec![
        master,
        rule(
            ".m.rule.suppress_notices",
            json!([event_match("content.msgtype", "m.notice")]),
            json!([]),
        ),
        rule(
            ".m.rule.invite_for_me",
            json!([
                event_match("type", "m.room.member"),
                event_match("content.membership", "invite"),
                event_match("state_key", user_id)
            ]),
            json!(["notify", {"set_tweak": "sound", "value": "default"}]),
        ),
        rule(
            ".m.rule.member_event",
            json!([event_match("type", "m.room.member")]),
            json!([]),
        ),
        rule(
            ".m.rule.is_user_mention",
            json!([{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id}]),
            notify_sound_highlight(),
        ),
        rule(
            ".m.rule.is_room_mention",
            json!([
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
                {"kind": "sender_notification_permission", "key": "room"}
            ]),
            json!(["notify", {"set_tweak": "highlight"}]),
        ),
        rule(
            ".m.rule.tombstone",
            json!([
                event_match("type", "m.room.tombstone"),
                event_match("state_key", "")
            ]),
            json!(["notify", {"set_tweak": "highlight"}]),
        ),
        rule(
            ".m.rule.reaction",
            json!([event_match("type", "m.reaction")]),
            json!([]),
        ),
        rule(
            ".m.rule.room.server_acl",
            json!([
                event_match("type", "m.room.server_acl"),
                event_match("state_key", "")
            ]),
            json!([]),
        ),
        rule(
            ".m.rule.suppress_edits",
            json!([{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}]),
            json!([]),
        ),
    ];
    let one_to_one = |id: &str, kind: &str| {
        rule(
            id,
            json!([{"kind": "room_member_count", "is": "2"}, event_match("type", kind)]),
            json!(["notify", {"set_tweak": "sound", "value": "default"}]),
        )
    };
    let underride = vec![
        rule(
            ".m.rule.call",
            json!([event_match("type", "m.call.invite")]),
            json!(["notify", {"set_tweak": "sound", "value": "ring"}]),
        ),
        one_to_one(".m.rule.encrypted_room_one_to_one", "m.room.encrypted"),
        one_to_one(".m.rule.room_one_to_one", "m.room.message"),
        rule(
            ".m.rule.message",
            json!([event_match("type", "m.room.message")]),
            json!(["notify"]),
        ),
        rule(
            ".m.rule.encrypted",
            json!([event_match("type", "m.room.encrypted")]),
            json!(["notify"]),
        ),
    ];
    Ruleset {
        override_,
        content: Vec::new(),
        room: Vec::new(),
        sender: Vec::new(),
        underride,
    }
}

/// Strips the historical `dont_notify` and `coalesce` actions, as the spec requires.
pub fn clean_actions(actions: Vec<Value>) -> Vec<Value> {
    actions
        .into_iter()
        .filter(|a| !matches!(a.as_str(), Some("dont_notify" | "coalesce")))
        .collect()
}

/// Checks an action list a client sent: strings or `set_tweak` objects.
pub fn validate_actions(actions: &[Value]) -> Result<()> {
    for a in actions {
        let ok = match a {
            Value::String(s) => matches!(s.as_str(), "notify" | "dont_notify" | "coalesce"),
            Value::Object(o) => o.get("set_tweak").is_some_and(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(Error::invalid_param(format!(
                "Invalid push rule action: {a}"
            )));
        }
    }
    Ok(())
}

impl Ruleset {
    pub fn kind(&self, kind: &str) -> Option<&Vec<PushRule>> {
        Some(match kind {
            "override" => &self.override_,
            "content" => &self.content,
            "room" => &self.room,
            "sender" => &self.sender,
            "underride" => &self.underride,
            _ => return None,
        })
    }

    pub fn kind_mut(&mut self, kind: &str) -> Option<&mut Vec<PushRule>> {
        Some(match kind {
            "override" => &mut self.override_,
            "content" => &mut self.content,
            "room" => &mut self.room,
            "sender" => &mut self.sender,
            "underride" => &mut self.underride,
            _ => return None,
        })
    }

    pub fn get(&self, kind: &str, rule_id: &str) -> Option<&PushRule> {
        self.kind(kind)?.iter().find(|r| r.rule_id == rule_id)
    }

    pub fn get_mut(&mut self, kind: &str, rule_id: &str) -> Option<&mut PushRule> {
        self.kind_mut(kind)?
            .iter_mut()
            .find(|r| r.rule_id == rule_id)
    }

    /// A stored ruleset brought in line with this server's defaults: every
    /// default rule in the spec's place, with the user's `enabled` and `actions`.
    /// Within a kind, user rules come before the server-default rules, except
    /// `.m.rule.master`, which always comes first.
    pub fn with_server_defaults(self, user_id: &str) -> Ruleset {
        let mut stored = self;
        let mut out = server_default(user_id);
        for kind in KINDS {
            let Some(defaults) = out.kind_mut(kind) else {
                continue;
            };
            let user_rules: Vec<PushRule> = stored
                .kind(kind)
                .map(|rules| {
                    rules
                        .iter()
                        .filter(|r| !r.rule_id.starts_with('.'))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for d in defaults.iter_mut() {
                if let Some(saved) = stored.get_mut(kind, &d.rule_id) {
                    d.enabled = saved.enabled;
                    d.actions = clean_actions(std::mem::take(&mut saved.actions));
                }
            }
            let split = usize::from(kind == "override");
            let rest = defaults.split_off(split.min(defaults.len()));
            defaults.extend(user_rules);
            defaults.extend(rest);
        }
        out
    }

    /// Inserts or replaces a user rule (`PUT /pushrules/global/{kind}/{ruleId}`),
    /// honouring `before` and `after`, which name user rules of the same kind.
    pub fn put_user_rule(
        &mut self,
        kind: &str,
        rule: PushRule,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<()> {
        if rule.rule_id.starts_with('.') {
            return Err(Error::invalid_param(
                "Server-default rules can only have their actions and enabled flag changed.",
            ));
        }
        if rule.rule_id.contains('/') || rule.rule_id.contains('\\') || rule.rule_id.is_empty() {
            return Err(Error::invalid_param("Invalid rule_id."));
        }
        let list = self
            .kind_mut(kind)
            .ok_or_else(|| Error::invalid_param(format!("Unknown push rule kind {kind}")))?;
        let anchor = |list: &Vec<PushRule>, id: &str| -> Result<usize> {
            if id.starts_with('.') {
                return Err(Error::invalid_param(
                    "before/after cannot name a server-default rule.",
                ));
            }
            list.iter()
                .position(|r| r.rule_id == id)
                .ok_or_else(|| Error::not_found(format!("Push rule {id} not found.")))
        };
        if [before, after].contains(&Some(rule.rule_id.as_str())) {
            return Err(Error::invalid_param(
                "A rule cannot be placed relative to itself.",
            ));
        }
        // Check anchors before touching the list, so an error changes nothing.
        let before_ok = before.map(|b| anchor(list, b)).transpose()?;
        let after_ok = after.map(|a| anchor(list, a)).transpose()?;
        let existing = list.iter().position(|r| r.rule_id == rule.rule_id);
        if before_ok.is_none() && after_ok.is_none() {
            if let Some(i) = existing {
                // Replacing a rule in place keeps its priority.
                list[i] = rule;
                return Ok(());
            }
        }
        if let Some(i) = existing {
            list.remove(i);
        }
        let at = if let Some(b) = before {
            anchor(list, b)?
        } else if let Some(a) = after {
            anchor(list, a)? + 1
        } else {
            // A new rule gets the highest priority of its kind, below only master.
            usize::from(list.first().is_some_and(|r| r.rule_id == ".m.rule.master"))
        };
        list.insert(at.min(list.len()), rule);
        Ok(())
    }

    /// Deletes a user rule; server-default rules cannot be deleted.
    pub fn delete_user_rule(&mut self, kind: &str, rule_id: &str) -> Result<()> {
        let list = self
            .kind_mut(kind)
            .ok_or_else(|| Error::invalid_param(format!("Unknown push rule kind {kind}")))?;
        let i = list
            .iter()
            .position(|r| r.rule_id == rule_id)
            .ok_or_else(|| Error::not_found("Push rule not found."))?;
        if list[i].default {
            return Err(Error::forbidden("Server-default rules cannot be deleted."));
        }
        list.remove(i);
        Ok(())
    }
}
