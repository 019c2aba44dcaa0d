//! Push rule conditions (spec: "Push Rules: Conditions"), compiled once per
//! ruleset so that evaluating one event for a thousand members is a few map
//! lookups and precompiled matches per member.

use regex::Regex;
use serde_json::Value;

/// What the conditions look at: the event (as the server sees it: for an
/// encrypted event that is its cleartext envelope only) and the room.
pub struct EventContext<'a> {
    pub event: &'a Value,
    /// Joined members of the room.
    pub member_count: u64,
    /// The sender's power level in the room.
    pub sender_power: i64,
    /// `m.room.power_levels` `notifications` (absent keys default per spec).
    pub notification_levels: &'a Value,
}

/// The recipient the rules are evaluated for.
pub struct Recipient<'a> {
    pub user_id: &'a str,
    /// Their display name in this room, if any.
    pub display_name: Option<&'a str>,
}

#[derive(Clone, Debug)]
pub enum Condition {
    /// A glob on a string property; on `content.body`, on a word-bounded substring.
    EventMatch {
        path: Vec<String>,
        glob: Regex,
    },
    EventPropertyIs {
        path: Vec<String>,
        value: Value,
    },
    EventPropertyContains {
        path: Vec<String>,
        value: Value,
    },
    ContainsDisplayName,
    RoomMemberCount {
        op: CountOp,
        n: u64,
    },
    SenderNotificationPermission {
        key: String,
    },
    /// Unrecognised or malformed: never matches, per the spec.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountOp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

/// Splits a dot-separated property path; `\.` is a literal dot and `\\` a backslash.
pub fn split_path(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('.' | '\\')) => current.push(n),
                Some(n) => {
                    current.push('\\');
                    current.push(n);
                }
                None => current.push('\\'),
            },
            '.' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out
}

pub fn lookup<'v>(event: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter()
        .try_fold(event, |v, seg| v.as_object()?.get(seg))
}

/// A glob (`*` any run, `?` one character) as a case-insensitive regex. For
/// `content.body` the match may be any substring bounded by the start or end
/// of the value or a character outside `[A-Za-z0-9_]`.
pub fn glob_regex(pattern: &str, word_bounded: bool) -> Option<Regex> {
    let mut re = String::with_capacity(pattern.len() + 32);
    re.push_str("(?is)");
    re.push_str(if word_bounded {
        "(?:^|[^A-Za-z0-9_])"
    } else {
        "^"
    });
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*?"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push_str(if word_bounded {
        "(?:[^A-Za-z0-9_]|$)"
    } else {
        "$"
    });
    Regex::new(&re).ok()
}

/// A non-compound canonical JSON value, the only kind `event_property_*` compare.
fn is_scalar(v: &Value) -> bool {
    match v {
        Value::String(_) | Value::Bool(_) | Value::Null => true,
        Value::Number(n) => n
            .as_i64()
            .is_some_and(|i| (-(1i64 << 53) + 1..=(1i64 << 53) - 1).contains(&i)),
        _ => false,
    }
}

fn parse_count(is: &str) -> Option<(CountOp, u64)> {
    let (op, rest) = [
        ("==", CountOp::Eq),
        ("<=", CountOp::Le),
        (">=", CountOp::Ge),
        ("<", CountOp::Lt),
        (">", CountOp::Gt),
    ]
    .iter()
    .find_map(|(p, op)| is.strip_prefix(p).map(|r| (*op, r)))
    .unwrap_or((CountOp::Eq, is));
    Some((op, rest.parse().ok()?))
}

impl Condition {
    /// Compiles a condition as stored in a rule; anything unrecognised never matches.
    pub fn compile(v: &Value) -> Condition {
        let key = v["key"].as_str();
        match (v["kind"].as_str(), key) {
            (Some("event_match"), Some(key)) => match v["pattern"].as_str() {
                Some(p) => glob_regex(p, key == "content.body")
                    .map(|glob| Condition::EventMatch {
                        path: split_path(key),
                        glob,
                    })
                    .unwrap_or(Condition::Never),
                None => Condition::Never,
            },
            (Some("event_property_is"), Some(key)) if is_scalar(&v["value"]) => {
                Condition::EventPropertyIs {
                    path: split_path(key),
                    value: v["value"].clone(),
                }
            }
            (Some("event_property_contains"), Some(key)) if is_scalar(&v["value"]) => {
                Condition::EventPropertyContains {
                    path: split_path(key),
                    value: v["value"].clone(),
                }
            }
            (Some("contains_display_name"), _) => Condition::ContainsDisplayName,
            (Some("room_member_count"), _) => v["is"]
                .as_str()
                .and_then(parse_count)
                .map(|(op, n)| Condition::RoomMemberCount { op, n })
                .unwrap_or(Condition::Never),
            (Some("sender_notification_permission"), Some(key)) => {
                Condition::SenderNotificationPermission {
                    key: key.to_owned(),
                }
            }
            _ => Condition::Never,
        }
    }

    pub fn matches(&self, ctx: &EventContext<'_>, who: &Recipient<'_>) -> bool {
        match self {
            Condition::EventMatch { path, glob } => lookup(ctx.event, path)
                .and_then(Value::as_str)
                .is_some_and(|s| glob.is_match(s)),
            Condition::EventPropertyIs { path, value } => {
                lookup(ctx.event, path).is_some_and(|v| is_scalar(v) && v == value)
            }
            Condition::EventPropertyContains { path, value } => lookup(ctx.event, path)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == value)),
            Condition::ContainsDisplayName => {
                let Some(name) = who.display_name.filter(|n| !n.trim().is_empty()) else {
                    return false;
                };
                let Some(body) = ctx.event["content"]["body"].as_str() else {
                    return false;
                };
                contains_words(body, name)
            }
            Condition::RoomMemberCount { op, n } => {
                let c = ctx.member_count;
                match op {
                    CountOp::Eq => c == *n,
                    CountOp::Lt => c < *n,
                    CountOp::Gt => c > *n,
                    CountOp::Le => c <= *n,
                    CountOp::Ge => c >= *n,
                }
            }
            Condition::SenderNotificationPermission { key } => {
                let required = ctx.notification_levels[key.as_str()]
                    .as_i64()
                    .or_else(|| {
                        ctx.notification_levels[key.as_str()]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                    })
                    .unwrap_or(50);
                ctx.sender_power >= required
            }
            Condition::Never => false,
        }
    }
}

/// Whether `needle` occurs in `haystack`, case-insensitively, bounded by word
/// boundaries (the display-name condition's rule).
pub fn contains_words(haystack: &str, needle: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let hay = haystack.to_lowercase();
    let needle = needle.to_lowercase();
    let mut from = 0;
    while let Some(i) = hay[from..].find(&needle) {
        let start = from + i;
        let end = start + needle.len();
        let before_ok = hay[..start].chars().next_back().is_none_or(|c| !is_word(c));
        let after_ok = hay[end..].chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            return true;
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}
