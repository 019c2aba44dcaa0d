//! User-interactive authentication (UIA) sessions.
//!
//! A request that needs UIA without a completed flow gets 401 with `flows`,
//! `params`, `session` and `completed`. Stages are completed one request at a time.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    cluster::Commands,
    error::Error,
    util::{now_ms, random_string},
};

const SESSION_TTL_MS: i64 = 10 * 60_000;

/// UIA sessions. With several instances a flow may continue on any of them,
/// so sessions are also kept in Redis (`uia:{session}`, expiring with the
/// session); the local copy serves when Redis is unreachable.
#[derive(Default)]
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, Session>>,
    redis: Option<Arc<Commands>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Session {
    completed: Vec<String>,
    created: i64,
}

impl UiaSessions {
    pub fn new(redis: Option<Arc<Commands>>) -> Self {
        Self {
            sessions: Default::default(),
            redis,
        }
    }

    /// The session, from Redis when shared, else from this instance.
    async fn load(&self, id: &str) -> Option<Session> {
        if let Some(redis) = &self.redis {
            let key = redis.key("uia", id);
            match redis
                .query::<Option<String>>(redis::cmd("GET").arg(&key))
                .await
            {
                Ok(Some(json)) => {
                    if let Ok(s) = serde_json::from_str::<Session>(&json) {
                        return Some(s);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "UIA session read from this instance only"),
            }
        }
        let now = now_ms();
        self.sessions
            .lock()
            .get(id)
            .filter(|s| now - s.created < SESSION_TTL_MS)
            .cloned()
    }

    /// Stores the session here and, when shared, in Redis until it expires.
    async fn store(&self, id: &str, session: &Session) {
        let now = now_ms();
        {
            let mut sessions = self.sessions.lock();
            sessions.retain(|_, s| now - s.created < SESSION_TTL_MS);
            sessions.insert(id.to_owned(), session.clone());
        }
        let Some(redis) = &self.redis else { return };
        let left = (session.created + SESSION_TTL_MS - now).max(1);
        let Ok(json) = serde_json::to_string(session) else {
            return;
        };
        let key = redis.key("uia", id);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(json).arg("PX").arg(left);
        if let Err(e) = redis.query::<()>(&cmd).await {
            tracing::warn!(error = %e, "UIA session kept on this instance only");
        }
    }

    /// The 401 answer for an unfinished flow.
    pub async fn challenge(
        &self,
        flows: &[Vec<&str>],
        session: Option<&str>,
        error: Option<Error>,
    ) -> Error {
        let existing = match session {
            Some(id) => self.load(id).await.map(|s| (id.to_owned(), s)),
            None => None,
        };
        let (id, completed) = match existing {
            Some((id, s)) => (id, s.completed),
            None => {
                let id = random_string(24);
                let fresh = Session {
                    completed: Vec::new(),
                    created: now_ms(),
                };
                self.store(&id, &fresh).await;
                (id, Vec::new())
            }
        };
        let flows: Vec<Value> = flows.iter().map(|f| json!({"stages": f})).collect();
        // The first challenge carries no errcode; a failed stage carries its error.
        let mut out = error.unwrap_or_else(|| Error::new(401, "", ""));
        out.status = 401;
        out.with_field("flows", json!(flows))
            .with_field("params", json!({}))
            .with_field("session", json!(id))
            .with_field("completed", json!(completed))
    }

    pub async fn exists(&self, session: &str) -> bool {
        self.load(session).await.is_some()
    }

    pub async fn complete_stage(&self, session: &str, stage: &str) {
        let mut entry = self.load(session).await.unwrap_or_else(|| Session {
            completed: Vec::new(),
            created: now_ms(),
        });
        if !entry.completed.iter().any(|s| s == stage) {
            entry.completed.push(stage.to_owned());
        }
        self.store(session, &entry).await;
    }

    pub async fn completed(&self, session: &str) -> Vec<String> {
        self.load(session)
            .await
            .map(|s| s.completed)
            .unwrap_or_default()
    }

    pub async fn finish(&self, session: &str) {
        self.sessions.lock().remove(session);
        if let Some(redis) = &self.redis {
            let key = redis.key("uia", session);
            if let Err(e) = redis.query::<i64>(redis::cmd("DEL").arg(&key)).await {
                tracing::warn!(error = %e, "finished UIA session left in Redis until it expires");
            }
        }
    }

    /// Whether a flow is fully completed in this session.
    pub async fn flow_done(&self, session: &str, flows: &[Vec<&str>]) -> bool {
        let done = self.completed(session).await;
        flows
            .iter()
            .any(|f| f.iter().all(|stage| done.iter().any(|d| d == stage)))
    }
}
