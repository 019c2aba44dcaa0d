//! The push rule evaluator: the first enabled rule, in priority order, whose
//! conditions all hold decides the actions for one recipient.

use serde_json::Value;

use super::{
    conditions::{glob_regex, Condition, EventContext, Recipient},
    rules::{Ruleset, KINDS},
};

#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub kind: &'static str,
    pub rule_id: String,
    conditions: Vec<Condition>,
    pub actions: Vec<Value>,
}

/// What the matching rule says about an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub rule_id: String,
    pub actions: Vec<Value>,
    pub notify: bool,
    pub highlight: bool,
}

impl CompiledRule {
    fn outcome(&self) -> Outcome {
        let notify = self.actions.iter().any(|a| a.as_str() == Some("notify"));
        let highlight = self.actions.iter().any(|a| {
            a["set_tweak"].as_str() == Some("highlight") && a.get("value").is_none_or(|v| v == true)
        });
        Outcome {
            rule_id: self.rule_id.clone(),
            actions: self.actions.clone(),
            notify,
            highlight,
        }
    }
}

/// A user's enabled rules, in evaluation order, with their conditions compiled.
#[derive(Clone, Debug, Default)]
pub struct CompiledRules {
    rules: Vec<CompiledRule>,
}

impl CompiledRules {
    pub fn compile(ruleset: &Ruleset) -> Self {
        let mut rules = Vec::new();
        for kind in KINDS {
            for r in ruleset.kind(kind).into_iter().flatten() {
                if !r.enabled {
                    continue;
                }
                let conditions = match kind {
                    "override" | "underride" => r
                        .conditions
                        .iter()
                        .flatten()
                        .map(Condition::compile)
                        .collect(),
                    "content" => vec![r
                        .pattern
                        .as_deref()
                        .and_then(|p| glob_regex(p, true))
                        .map(|glob| Condition::EventMatch {
                            path: vec!["content".into(), "body".into()],
                            glob,
                        })
                        .unwrap_or(Condition::Never)],
                    "room" => vec![exact("room_id", &r.rule_id)],
                    _ => vec![exact("sender", &r.rule_id)],
                };
                rules.push(CompiledRule {
                    kind,
                    rule_id: r.rule_id.clone(),
                    conditions,
                    actions: r.actions.clone(),
                });
            }
        }
        Self { rules }
    }

    /// The matching rule's outcome for `who`, or `None` when no rule matches
    /// (no notification).
    pub fn evaluate(&self, ctx: &EventContext<'_>, who: &Recipient<'_>) -> Option<Outcome> {
        self.rules
            .iter()
            .find(|r| r.conditions.iter().all(|c| c.matches(ctx, who)))
            .map(CompiledRule::outcome)
    }
}

/// Room and sender rules compare their rule id with the property exactly.
fn exact(key: &str, value: &str) -> Condition {
    Condition::EventPropertyIs {
        path: vec![key.to_owned()],
        value: Value::String(value.to_owned()),
    }
}
