//! The subset of the spec's event filter that /sync and /messages apply.

use std::collections::HashSet;

use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Filter {
    pub timeline_limit: usize,
    pub lazy_load_members: bool,
    pub include_leave: bool,
    pub rooms: Option<HashSet<String>>,
    pub not_rooms: HashSet<String>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<HashSet<String>>,
    pub not_senders: HashSet<String>,
    /// `event_fields`: dotted paths of the fields to keep in each event.
    pub event_fields: Option<Vec<String>>,
    /// `room.timeline.unread_thread_notifications`: counts per thread in
    /// `unread_thread_notifications`, and the main timeline's alone in
    /// `unread_notifications`.
    pub unread_thread_notifications: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            timeline_limit: 10,
            lazy_load_members: false,
            include_leave: false,
            rooms: None,
            not_rooms: HashSet::new(),
            types: None,
            not_types: Vec::new(),
            senders: None,
            not_senders: HashSet::new(),
            event_fields: None,
            unread_thread_notifications: false,
        }
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    })
}

/// `*` matches any run of characters, as in the spec's filter type globs.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => {
            if !value.starts_with(prefix) {
                return false;
            }
            let tail = &value[prefix.len()..];
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
        }
    }
}

impl Filter {
    /// Reads a filter definition (`room.timeline`, `room.state`, `room.rooms`...).
    pub fn from_json(v: &Value) -> Self {
        let mut f = Filter::default();
        let room = &v["room"];
        let timeline = &room["timeline"];
        if let Some(limit) = timeline["limit"].as_u64() {
            f.timeline_limit = limit.clamp(1, 1000) as usize;
        }
        f.lazy_load_members = room["state"]["lazy_load_members"]
            .as_bool()
            .unwrap_or(false)
            || timeline["lazy_load_members"].as_bool().unwrap_or(false);
        f.include_leave = room["include_leave"].as_bool().unwrap_or(false);
        f.rooms = strings(&room["rooms"]).map(|r| r.into_iter().collect());
        f.not_rooms = strings(&room["not_rooms"])
            .unwrap_or_default()
            .into_iter()
            .collect();
        f.types = strings(&timeline["types"]);
        f.not_types = strings(&timeline["not_types"]).unwrap_or_default();
        f.senders = strings(&timeline["senders"]).map(|r| r.into_iter().collect());
        f.not_senders = strings(&timeline["not_senders"])
            .unwrap_or_default()
            .into_iter()
            .collect();
        f.event_fields = strings(&v["event_fields"]);
        f.unread_thread_notifications = timeline["unread_thread_notifications"]
            .as_bool()
            .unwrap_or(false);
        f
    }

    /// Keeps only the `event_fields` of a client-format event (all when unset).
    /// A path is split on `.`; `\.` is a literal dot.
    pub fn project(&self, event: Value) -> Value {
        let Some(fields) = &self.event_fields else {
            return event;
        };
        let mut out = Value::Object(Default::default());
        for field in fields {
            let path = split_path(field);
            let mut src = &event;
            let mut found = true;
            for part in &path {
                match src.get(part) {
                    Some(v) => src = v,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            if !found {
                continue;
            }
            let mut dst = &mut out;
            for (i, part) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    dst[part.as_str()] = src.clone();
                } else {
                    if !dst.get(part).is_some_and(Value::is_object) {
                        dst[part.as_str()] = Value::Object(Default::default());
                    }
                    dst = &mut dst[part.as_str()];
                }
            }
        }
        out
    }

    /// A RoomEventFilter (as `/messages` takes it) at the top level.
    pub fn from_room_event_filter(v: &Value) -> Self {
        let mut f = Filter::default();
        if let Some(limit) = v["limit"].as_u64() {
            f.timeline_limit = limit.clamp(1, 1000) as usize;
        }
        f.lazy_load_members = v["lazy_load_members"].as_bool().unwrap_or(false);
        f.rooms = strings(&v["rooms"]).map(|r| r.into_iter().collect());
        f.not_rooms = strings(&v["not_rooms"])
            .unwrap_or_default()
            .into_iter()
            .collect();
        f.types = strings(&v["types"]);
        f.not_types = strings(&v["not_types"]).unwrap_or_default();
        f.senders = strings(&v["senders"]).map(|r| r.into_iter().collect());
        f.not_senders = strings(&v["not_senders"])
            .unwrap_or_default()
            .into_iter()
            .collect();
        f
    }

    pub fn room_allowed(&self, room_id: &str) -> bool {
        !self.not_rooms.contains(room_id) && self.rooms.as_ref().is_none_or(|r| r.contains(room_id))
    }

    /// Whether a timeline event (client format) passes the type and sender filters.
    pub fn event_allowed(&self, event: &Value) -> bool {
        let kind = event["type"].as_str().unwrap_or_default();
        let sender = event["sender"].as_str().unwrap_or_default();
        if self.not_types.iter().any(|p| glob_match(p, kind)) || self.not_senders.contains(sender) {
            return false;
        }
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|p| glob_match(p, kind)))
            && self.senders.as_ref().is_none_or(|s| s.contains(sender))
    }
}

fn split_path(field: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                if let Some(p) = parts.last_mut() {
                    p.push('.');
                }
                chars.next();
            }
            '.' => parts.push(String::new()),
            c => {
                if let Some(p) = parts.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection() {
        let f = Filter {
            event_fields: Some(vec![
                "type".into(),
                "content.body".into(),
                "content.m\\.x".into(),
            ]),
            ..Filter::default()
        };
        let ev = serde_json::json!({"type": "t", "sender": "s", "content": {"body": "b", "msgtype": "m", "m.x": 1}});
        assert_eq!(
            f.project(ev),
            serde_json::json!({"type": "t", "content": {"body": "b", "m.x": 1}})
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("m.*", "m.room.message"));
        assert!(glob_match("*", "x"));
        assert!(!glob_match("m.room.name", "m.room.names"));
        assert!(glob_match("m.*.message", "m.room.message"));
    }
}
