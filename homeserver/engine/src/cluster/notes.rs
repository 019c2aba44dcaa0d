//! The notes channel: ephemeral changes one instance tells all the others
//! about (typing, presence, push rule edits), over Redis pub/sub.
//!
//! The stream channel (`redis_link`) carries positions and wake-ups only;
//! typing and presence also need their *content* on every instance, so that
//! /sync reads them from memory instead of asking Redis once per room and
//! per user. A note carries the full new value with a version Redis handed
//! out, so notes that arrive out of order or twice are harmless. Each service
//! listens through [`Notes::listen`]. While Redis is down notes are lost:
//! typing and presence stop crossing instances until it returns (they expire
//! or are refreshed on their own), and push rule caches fall back to their TTL.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{wire, Commands};
use crate::sync::notifier::WakeTarget;

/// Notes queued for a slow listener before it starts missing some.
const LISTEN_BUFFER: usize = 8_192;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_AFTER: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Note {
    /// A room's typing users (with their deadlines, ms since the epoch) after
    /// the change that made version `v`; `wake` are the users to wake
    /// (`u:`/`r:` targets as on the stream channel).
    Typing {
        room: String,
        v: i64,
        users: Vec<(String, i64)>,
        wake: Vec<String>,
    },
    /// A user's presence after the change that made version `v`.
    Presence {
        user: String,
        v: i64,
        state: String,
        status_msg: Option<String>,
        last_active: i64,
        wake: Vec<String>,
    },
    /// The user's push rules changed: drop cached copies.
    PushRules { user: String },
}

/// Wake targets as notes carry them (as on the stream channel).
pub fn encode_targets(targets: &[WakeTarget]) -> Vec<String> {
    targets.iter().map(wire::encode_target).collect()
}

pub fn decode_targets(targets: &[String]) -> Vec<WakeTarget> {
    targets
        .iter()
        .filter_map(|t| wire::decode_target(t))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The sending process, so it skips its own notes.
    b: String,
    #[serde(flatten)]
    note: Note,
}

/// This process's end of the notes channel.
pub struct Notes {
    commands: Arc<Commands>,
    channel: String,
    boot_id: String,
    local: broadcast::Sender<Note>,
}

impl Notes {
    pub fn new(commands: Arc<Commands>, boot_id: &str) -> Arc<Self> {
        Arc::new(Self {
            channel: commands.channel("notes"),
            commands,
            boot_id: boot_id.to_owned(),
            local: broadcast::channel(LISTEN_BUFFER).0,
        })
    }

    /// Runs `apply` on every note other instances send from now on, on a
    /// task of its own, until the channel closes. When the follower falls
    /// behind, the notes it missed are lost: a warning names it (`what`) and
    /// `apply` gets `None`, to drop whatever those notes may have changed.
    pub fn follow(&self, what: &'static str, mut apply: impl FnMut(Option<Note>) + Send + 'static) {
        let mut notes = self.local.subscribe();
        tokio::spawn(async move {
            loop {
                match notes.recv().await {
                    Ok(note) => apply(Some(note)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "{what} fell behind the notes channel");
                        apply(None);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Tells the other instances; a failure is logged (the note is lost).
    pub async fn send(&self, note: Note) {
        let envelope = Envelope {
            b: self.boot_id.clone(),
            note,
        };
        let Ok(payload) = serde_json::to_vec(&envelope) else {
            return;
        };
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.channel).arg(payload);
        if let Err(e) = self.commands.query::<i64>(&cmd).await {
            tracing::debug!(error = %e, "cannot publish a note to the other instances");
        }
    }

    /// Follows the channel for ever, moving to the next seed on failure. A
    /// plain subscription on one node suffices on a cluster too: `PUBLISH`
    /// reaches the subscribers of every node.
    pub fn spawn(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let seeds = this.commands.seeds().to_vec();
            if seeds.is_empty() {
                return;
            }
            let mut seed = 0;
            loop {
                let node = &seeds[seed % seeds.len()];
                let attempt = async {
                    let mut pubsub = redis::Client::open(format!("redis://{node}/"))?
                        .get_async_pubsub()
                        .await?;
                    pubsub.subscribe(&this.channel).await?;
                    redis::RedisResult::Ok(pubsub)
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                    Ok(Ok(mut pubsub)) => {
                        tracing::info!(node = %node, "following the notes channel");
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            this.receive(msg.get_payload_bytes());
                        }
                        tracing::warn!("lost the notes channel; typing and presence stay local");
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "cannot subscribe to the notes channel")
                    }
                    Err(_) => tracing::debug!("timed out subscribing to the notes channel"),
                }
                seed += 1;
                tokio::time::sleep(RETRY_AFTER).await;
            }
        });
    }

    fn receive(&self, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(env) if env.b == self.boot_id => {}
            // No listener yet (start-up) is fine: nobody needs the note.
            Ok(env) => {
                let _ = self.local.send(env.note);
            }
            Err(e) => tracing::warn!(error = %e, "unreadable note on the notes channel"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip() {
        let note = Note::Typing {
            room: "!r:x".into(),
            v: 3,
            users: vec![("@a:x".into(), 42)],
            wake: vec!["u:@a:x".into()],
        };
        let env = Envelope {
            b: "boot".into(),
            note: note.clone(),
        };
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.contains(r#""k":"typing""#), "{json}");
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back.note, note);
    }
}
