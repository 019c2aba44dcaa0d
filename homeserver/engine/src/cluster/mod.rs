//! Multi-instance mode: several processes serve one server name, sharing the
//! SQL database (and the CQL timeline, and the media store), and keep each
//! other's readers up to date through Redis (docs/scale-out.md).
//!
//! - **Positions.** Each instance hands out stream positions congruent to
//!   its id modulo [`MAX_INSTANCES`]: no shared counter on the write path.
//! - **Floors.** Each instance keeps a *floor*: every position it will ever
//!   persist at or below it is persisted. Readers everywhere show only what
//!   lies below the lowest floor of the live instances, so a position that
//!   commits late is never skipped. An instance announces its floor on the
//!   stream channel after each write (coalesced), and an idle instance raises
//!   its floor to any higher floor it hears, so busy instances never wait for
//!   idle ones.
//! - **Liveness.** Each instance writes its row (floor and time) in the
//!   shared database every heartbeat; one silent for `lease_ms` is dead, and
//!   the others stop waiting for it. The database is also the slow path for
//!   floors when Redis is unreachable.
//! - **Wake-ups** travel with the floors, and each instance wakes its own
//!   connections when the position becomes visible to it. Without Redis,
//!   every local waiter is woken whenever the watermark moves instead (they
//!   poll the store), so nothing is lost, only slower.
//! - **Rooms.** Writers of one room take a lock in the database and refresh
//!   their cached room state if another instance wrote since; the rooms a
//!   message names are refreshed on every instance before their next use.

mod commands;
mod notes;
mod redis_link;
mod wire;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::mpsc;

pub use self::{
    commands::{bump_version, CommandError, CommandResult, Commands, Redis},
    notes::{decode_targets, encode_targets, Note, Notes},
};
pub use crate::config::MAX_INSTANCES;
use crate::{
    config::Cluster as ClusterConfig,
    core::Core,
    rooms::RoomService,
    storage::{cluster::InstanceRecord, Storage, StreamPos},
    sync::notifier::WakeTarget,
    util::now_ms,
};

/// This instance's side of the cluster, held by [`Core`].
pub struct Link {
    pub instance: u16,
    /// Random per process start.
    pub boot_id: String,
    config: ClusterConfig,
    channel: String,
    outbox: mpsc::UnboundedSender<Outgoing>,
    inbox: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    /// Whether the stream channel's subscription is up.
    subscribed: AtomicBool,
    /// The highest floor announced so far.
    announced: AtomicI64,
}

/// One item for the stream channel; the publisher merges what is queued.
struct Outgoing {
    floor: StreamPos,
    wake: Option<(StreamPos, Vec<WakeTarget>)>,
    room: Option<String>,
}

impl Link {
    pub fn new(config: &ClusterConfig, server_name: &str) -> Arc<Self> {
        let (outbox, inbox) = mpsc::unbounded_channel();
        Arc::new(Self {
            instance: config.instance_id,
            boot_id: crate::util::random_string(16),
            config: config.clone(),
            channel: format!("hs.stream.{server_name}"),
            outbox,
            inbox: parking_lot::Mutex::new(Some(inbox)),
            subscribed: AtomicBool::new(false),
            announced: AtomicI64::new(0),
        })
    }

    /// Whether wake-ups from other instances arrive (Redis reachable).
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Tells the other instances about a completed position: its wake-ups,
    /// the room it changed, and this instance's floor afterwards.
    pub fn announce(
        &self,
        floor: StreamPos,
        wake: Option<(StreamPos, Vec<WakeTarget>)>,
        room: Option<String>,
    ) {
        self.announced.fetch_max(floor, Ordering::AcqRel);
        // The publisher lives as long as the process; a send can only fail
        // during shutdown, when nobody is listening anyway.
        let _ = self.outbox.send(Outgoing { floor, wake, room });
    }

    /// Announces the floor if it rose past what the others last heard.
    fn follow(&self, floor: StreamPos) {
        if floor > self.announced.load(Ordering::Acquire) {
            self.announce(floor, None, None);
        }
    }
}

/// The position a new instance starts from: above every floor any instance
/// (live or dead) has recorded, so it never hands out a position readers have
/// already moved past.
pub async fn start_position(storage: &Storage) -> crate::error::Result<StreamPos> {
    Ok(storage
        .cluster
        .instances()
        .await?
        .iter()
        .map(|r| r.floor)
        .max()
        .unwrap_or(0))
}

/// Registers this instance and starts its background tasks. Returns once the
/// other live instances have had time to see it, so that no position it hands
/// out can fall below a watermark they computed without it.
pub async fn join(core: Arc<Core>, rooms: RoomService) -> anyhow::Result<()> {
    let Some(link) = core.cluster.clone() else {
        return Ok(());
    };
    let now = now_ms();
    let lease = link.config.lease_ms as i64;
    for row in core.storage.cluster.instances().await? {
        if row.instance_id == link.instance && now - row.heartbeat_ts < lease {
            anyhow::bail!(
                "cluster.instance_id {} is in use by a live instance (heartbeat {} ms ago); \
                 give each instance its own id, or wait {} ms after stopping the old one",
                link.instance,
                now - row.heartbeat_ts,
                lease
            );
        }
    }
    heartbeat(&core, &link).await?;
    core.outbound
        .set_owner(federation_owner(&core, link.instance));
    let inbox = link
        .inbox
        .lock()
        .take()
        .ok_or_else(|| anyhow::anyhow!("cluster link started twice"))?;
    tokio::spawn(redis_link::publish(link.clone(), inbox));
    tokio::spawn(redis_link::subscribe(core.clone(), rooms));
    tokio::spawn(heartbeats(core.clone(), link.clone()));
    tokio::time::sleep(Duration::from_millis(2 * link.config.heartbeat_ms)).await;
    tracing::info!(instance = link.instance, "joined the cluster");
    Ok(())
}

/// Writes this instance's row and takes in everyone else's.
async fn heartbeat(core: &Core, link: &Link) -> crate::error::Result<()> {
    let record = InstanceRecord {
        instance_id: link.instance,
        boot_id: link.boot_id.clone(),
        floor: core.stream.local_floor(),
        heartbeat_ts: now_ms(),
    };
    core.storage.cluster.heartbeat(&record).await?;
    let rows = core.storage.cluster.instances().await?;
    let now = now_ms();
    let lease = link.config.lease_ms as i64;
    let mut live = Vec::new();
    for row in rows {
        if row.instance_id == link.instance {
            if row.boot_id != link.boot_id {
                tracing::error!(
                    instance = link.instance,
                    "another process writes this instance's row: two instances share an id"
                );
            }
            continue;
        }
        if now - row.heartbeat_ts <= lease {
            live.push(row.instance_id);
            let advance = core
                .stream
                .remote_update(row.instance_id, row.floor, Vec::new());
            core.wake(&advance.due);
        }
    }
    for known in core.stream.known_instances() {
        if !live.contains(&known) {
            tracing::warn!(
                instance = known,
                "instance stopped heartbeating; no longer waiting for it"
            );
            let advance = core.stream.forget_instance(known);
            core.wake(&advance.due);
        }
    }
    link.follow(core.stream.local_floor());
    Ok(())
}

/// One sender per federation destination: the live instance (by id order)
/// that the destination's name hashes to.
fn federation_owner(core: &Arc<Core>, me: u16) -> crate::federation::sender::OwnerFn {
    let core = Arc::downgrade(core);
    Arc::new(move |destination: &str| {
        let Some(core) = core.upgrade() else {
            return false;
        };
        let mut live = core.stream.known_instances();
        live.push(me);
        live.sort_unstable();
        live.dedup();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(destination.as_bytes());
        let hash = u64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]);
        live[(hash % live.len() as u64) as usize] == me
    })
}

async fn heartbeats(core: Arc<Core>, link: Arc<Link>) {
    let mut tick = tokio::time::interval(Duration::from_millis(link.config.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = core.stream.current();
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat(&core, &link).await {
            tracing::warn!(error = %e, "cluster heartbeat failed");
        }
        // Rows other instances queued for destinations this one sends to.
        if let Err(e) = core.outbound.rescan().await {
            tracing::warn!(error = %e, "cannot scan the federation outbox");
        }
        let current = core.stream.current();
        if current != seen && !link.subscribed() {
            // No wake-ups arrive from other instances: let every waiter look.
            core.notifier.wake_all();
        }
        seen = current;
    }
}
