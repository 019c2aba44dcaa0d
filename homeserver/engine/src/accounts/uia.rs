//! User-interactive authentication (UIA) sessions.
//!
//! A request that needs UIA without a completed flow gets 401 with `flows`,
//! `params`, `session` and `completed`. Stages are completed one request at a time.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::{
    error::Error,
    util::{now_ms, random_string},
};

const SESSION_TTL_MS: i64 = 10 * 60_000;

#[derive(Default)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

struct Session {
    completed: Vec<String>,
    created: i64,
}

impl UiaSessions {
    /// The 401 answer for an unfinished flow.
    pub fn challenge(
        &self,
        flows: &[Vec<&str>],
        session: Option<&str>,
        error: Option<Error>,
    ) -> Error {
        let now = now_ms();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| now - s.created < SESSION_TTL_MS);
        let id = session
            .filter(|s| sessions.contains_key(*s))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let id = random_string(24);
                sessions.insert(
                    id.clone(),
                    Session {
                        completed: Vec::new(),
                        created: now,
                    },
                );
                id
            });
        let completed = sessions
            .get(&id)
            .map(|s| s.completed.clone())
            .unwrap_or_default();
        let flows: Vec<Value> = flows.iter().map(|f| json!({"stages": f})).collect();
        // The first challenge carries no errcode; a failed stage carries its error.
        let mut out = error.unwrap_or_else(|| Error::new(401, "", ""));
        out.status = 401;
        out.with_field("flows", json!(flows))
            .with_field("params", json!({}))
            .with_field("session", json!(id))
            .with_field("completed", json!(completed))
    }

    pub fn exists(&self, session: &str) -> bool {
        self.sessions.lock().contains_key(session)
    }

    pub fn complete_stage(&self, session: &str, stage: &str) {
        let mut sessions = self.sessions.lock();
        let entry = sessions
            .entry(session.to_owned())
            .or_insert_with(|| Session {
                completed: Vec::new(),
                created: now_ms(),
            });
        if !entry.completed.iter().any(|s| s == stage) {
            entry.completed.push(stage.to_owned());
        }
    }

    pub fn completed(&self, session: &str) -> Vec<String> {
        self.sessions
            .lock()
            .get(session)
            .map(|s| s.completed.clone())
            .unwrap_or_default()
    }

    pub fn finish(&self, session: &str) {
        self.sessions.lock().remove(session);
    }

    /// Whether a flow is fully completed in this session.
    pub fn flow_done(&self, session: &str, flows: &[Vec<&str>]) -> bool {
        let done = self.completed(session);
        flows
            .iter()
            .any(|f| f.iter().all(|stage| done.iter().any(|d| d == stage)))
    }
}
