//! The stream channel over Redis pub/sub. Plain `PUBLISH`/`SUBSCRIBE`: on a
//! Redis Cluster a message published on any node reaches the subscribers of
//! every node, so each instance talks to one node and moves to the next seed
//! when that one fails.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::{wire, Link, Outgoing};
use crate::{core::Core, rooms::RoomService};

/// A connection attempt that takes longer than this counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, wait this long before trying Redis again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// At most this many wake-ups go in one message.
const MAX_BATCH: usize = 512;

fn client(seed: &str) -> redis::RedisResult<redis::Client> {
    redis::Client::open(format!("redis://{seed}/"))
}

/// Publishes what [`Link::announce`] queued, merging everything queued
/// meanwhile into one message. While Redis is down, messages are dropped:
/// floors also travel through the database, and wake-ups are replaced by
/// waking everyone.
pub(super) async fn publish(link: Arc<Link>, mut inbox: mpsc::UnboundedReceiver<Outgoing>) {
    let seeds = link.config.redis.clone();
    let mut seed = 0;
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut failed_at: Option<Instant> = None;
    while let Some(first) = inbox.recv().await {
        let mut msg = wire::StreamMessage {
            i: link.instance,
            ..Default::default()
        };
        let add = |msg: &mut wire::StreamMessage, item: Outgoing| {
            msg.f = msg.f.max(item.floor);
            if let Some((pos, targets)) = item.wake {
                if !targets.is_empty() {
                    msg.w
                        .push((pos, targets.iter().map(wire::encode_target).collect()));
                }
            }
            if let Some(room) = item.room {
                if !msg.c.contains(&room) {
                    msg.c.push(room);
                }
            }
        };
        add(&mut msg, first);
        while msg.w.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(item) => add(&mut msg, item),
                Err(_) => break,
            }
        }
        if conn.is_none() && failed_at.is_none_or(|t| t.elapsed() >= RETRY_AFTER) {
            let attempt = async {
                client(&seeds[seed % seeds.len()])?
                    .get_multiplexed_async_connection()
                    .await
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                Ok(Ok(c)) => {
                    conn = Some(c);
                    failed_at = None;
                }
                _ => {
                    seed += 1;
                    failed_at = Some(Instant::now());
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let Ok(payload) = serde_json::to_vec(&msg) else {
            continue;
        };
        let sent = redis::cmd("PUBLISH")
            .arg(&link.channel)
            .arg(payload)
            .query_async::<i64>(c)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot publish on the cluster stream channel");
            conn = None;
            seed += 1;
            failed_at = Some(Instant::now());
        }
    }
}

/// Follows the other instances' messages, reconnecting for ever.
pub(super) async fn subscribe(core: Arc<Core>, rooms: RoomService) {
    let Some(link) = core.cluster.clone() else {
        return;
    };
    let seeds = link.config.redis.clone();
    let mut seed = 0;
    loop {
        let attempt = async {
            let mut pubsub = client(&seeds[seed % seeds.len()])?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe(&link.channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(mut pubsub)) => {
                link.subscribed.store(true, Ordering::Release);
                tracing::info!(node = %seeds[seed % seeds.len()], "following the cluster stream channel");
                // Wake-ups published while we were away are lost: look again.
                rooms.mark_all_stale();
                core.notifier.wake_all();
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    receive(&core, &link, &rooms, msg.get_payload_bytes());
                }
                link.subscribed.store(false, Ordering::Release);
                tracing::warn!("lost the cluster stream channel; falling back to polling");
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot subscribe to the cluster stream channel")
            }
            Err(_) => tracing::debug!("timed out subscribing to the cluster stream channel"),
        }
        seed += 1;
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

fn receive(core: &Core, link: &Link, rooms: &RoomService, payload: &[u8]) {
    let msg: wire::StreamMessage = match serde_json::from_slice(payload) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable message on the cluster stream channel");
            return;
        }
    };
    if msg.i == link.instance {
        return;
    }
    // Rooms first: a woken reader must find the room's new state.
    for room in &msg.c {
        rooms.mark_stale(room);
    }
    let advance = core.stream.remote_update(msg.i, msg.f, msg.wakes());
    core.wake(&advance.due);
    link.follow(advance.floor);
}
