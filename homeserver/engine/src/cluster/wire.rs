//! The messages instances exchange on the stream channel.
//!
//! One message says: "instance `i` (process `b`) has persisted everything it
//! will ever persist at or below `f`; these positions carry these wake-ups;
//! these rooms' stored timelines changed". JSON, so an operator can read the
//! channel with `redis-cli subscribe`.

use serde::{Deserialize, Serialize};

use crate::{
    storage::StreamPos,
    sync::notifier::{Sections, WakeTarget},
};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamMessage {
    /// The sending instance.
    pub i: u16,
    /// Its stream floor.
    pub f: StreamPos,
    /// Wake-ups by position: `u:<user id>`, `s<sections>:<user id>` (only
    /// those sync sections changed, a decimal bit set) or `r:<room id>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub w: Vec<(StreamPos, Vec<String>)>,
    /// Rooms whose timeline changed: other instances refresh their cached state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub c: Vec<String>,
}

pub fn encode_target(target: &WakeTarget) -> String {
    match target {
        WakeTarget::User(u) => format!("u:{u}"),
        WakeTarget::Changed(u, s) => format!("s{}:{u}", s.0),
        WakeTarget::Room(r) => format!("r:{r}"),
    }
}

pub fn decode_target(s: &str) -> Option<WakeTarget> {
    match s.split_once(':')? {
        ("u", id) => Some(WakeTarget::User(id.to_owned())),
        ("r", id) => Some(WakeTarget::Room(id.to_owned())),
        (kind, id) => {
            let bits = kind.strip_prefix('s')?.parse().ok()?;
            Some(WakeTarget::Changed(id.to_owned(), Sections(bits)))
        }
    }
}

impl StreamMessage {
    /// The wake-ups, decoded; unknown kinds (from a newer version) are skipped.
    pub fn wakes(&self) -> Vec<(StreamPos, Vec<WakeTarget>)> {
        self.w
            .iter()
            .map(|(pos, targets)| {
                let decoded = targets.iter().filter_map(|t| decode_target(t)).collect();
                (*pos, decoded)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_ids_may_contain_colons() {
        for t in [
            WakeTarget::User("@a:example.org:8448".into()),
            WakeTarget::Changed("@a:example.org:8448".into(), Sections::DEVICE_LISTS),
            WakeTarget::member("@b:x"),
            WakeTarget::Room("!r:x".into()),
        ] {
            assert_eq!(decode_target(&encode_target(&t)), Some(t));
        }
        assert_eq!(decode_target("z:whatever"), None);
        assert_eq!(decode_target("s999:@a:x"), None);
        let msg: StreamMessage = serde_json::from_str(r#"{"i":3,"f":7}"#).unwrap();
        assert_eq!((msg.i, msg.f, msg.w.len()), (3, 7, 0));
    }
}
