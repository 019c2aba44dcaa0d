//! `hs-bench fanout`: time from one send to the last of many online members
//! receiving it.
//!
//! A public room gets `--members` joined users, each following it over a
//! `/sync` long-poll or a WebSocket stream. Alice then sends one message at a
//! time; for each, the clock runs from just before her `PUT /send` until the
//! last member's client has it. Rooms above `limits.large_room_members` use one
//! room-level wake-up, so the send itself does no per-member work; what this
//! measures is the wake-up and the members' syncs behind it.
//!
//! Registering thousands of users is dominated by password hashing; for a
//! throwaway benchmark server, cheap argon2 settings
//! (`HS_PASSWORDS__ARGON2_MEMORY_KIB=1024 HS_PASSWORDS__ARGON2_ITERATIONS=1`)
//! make set-up minutes shorter without touching what is measured.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{stream, StreamExt, TryStreamExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::receive::{self, Receiver, Transport};
use crate::setup::{self, ServerArgs};
use crate::stats::Summary;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Online members receiving each message.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// How members receive: `/sync` long-polls or WebSocket streams.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Messages to measure, sent one at a time.
    #[arg(long, default_value_t = 10)]
    pub messages: u64,
    /// Registrations and joins in flight during set-up.
    #[arg(long, default_value_t = 32)]
    pub setup_parallel: usize,
    /// Source addresses for the members' WebSockets, e.g. `127.0.0.2,127.0.0.3`.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub source_ips: Vec<IpAddr>,
    /// Give up if a message has not reached every member within this many seconds.
    #[arg(long, default_value_t = 60)]
    pub message_timeout_secs: u64,
    /// Unmeasured messages first. The first message after the joins makes
    /// each member's sync do one-time catch-up work (a large room's unread
    /// counts are evaluated from their join on, then kept); its time to the
    /// last member is printed on its own.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// How long a warm-up message may take to reach every member.
    #[arg(long, default_value_t = 600)]
    pub warmup_timeout_secs: u64,
}

pub async fn run(args: Args) -> Result<()> {
    let http = setup::http_client()?;
    let run = setup::run_id();
    let alice = setup::register_user(&http, &args.server, &format!("bench_{run}_owner")).await?;
    let room_id = alice
        .create_room(&json!({"preset": "public_chat", "name": format!("fanout {run}")}))
        .await?;

    let started = Instant::now();
    let members: Vec<_> = stream::iter(0..args.members)
        .map(|i| {
            let (http, server, room_id, run) = (&http, &args.server, &room_id, &run);
            async move {
                let m = setup::register_user(http, server, &format!("bench_{run}_m{i}")).await?;
                m.join(room_id).await?;
                anyhow::Ok(m)
            }
        })
        .buffer_unordered(args.setup_parallel.max(1))
        .try_collect()
        .await?;
    println!(
        "hs-bench fanout: {} members joined {room_id} in {:.1} s",
        members.len(),
        started.elapsed().as_secs_f64()
    );

    // Positions taken after every join, so the first long-polls wait for the
    // measured messages rather than returning the joins.
    let no_rooms = json!({"room": {"rooms": []}, "presence": {"not_types": ["*"]}}).to_string();
    let sinces: Vec<String> = stream::iter(members.iter())
        .map(|m| {
            let no_rooms = &no_rooms;
            async move { anyhow::Ok(m.sync(None, no_rooms, 0).await?.0.next_batch) }
        })
        .buffer_unordered(args.setup_parallel.max(1))
        .try_collect()
        .await?;

    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let mut receivers = Vec::with_capacity(members.len());
    for (i, (session, since)) in members.into_iter().zip(sinces).enumerate() {
        let receiver = Receiver {
            index: i,
            session,
            room_id: room_id.clone(),
            run: run.clone(),
            since,
            source: Some(args.source_ips[i % args.source_ips.len()]),
        };
        receivers.push(tokio::spawn(receiver.run(args.transport, tx.clone())));
    }
    drop(tx);
    // Let every long-poll or stream reach the server and park.
    tokio::time::sleep(Duration::from_secs(3 + args.members as u64 / 2000)).await;
    let failed = receivers.iter().filter(|r| r.is_finished()).count();
    if failed > 0 {
        let first = receivers
            .into_iter()
            .find(|r| r.is_finished())
            .context("a receiver stopped")?;
        let why = first.await?.err();
        bail!("{failed} members could not follow the room: {why:?}");
    }

    let mut to_last = Vec::new();
    let mut to_each = Vec::new();
    for seq in 0..args.warmup + args.messages {
        let warmup = seq < args.warmup;
        let timeout = Duration::from_secs(if warmup {
            args.warmup_timeout_secs
        } else {
            args.message_timeout_secs
        });
        let sent_at = Instant::now();
        alice
            .send_message(
                &room_id,
                &format!("{run}-{seq}"),
                &receive::message(&run, seq, ""),
            )
            .await?;
        let mut got = HashSet::with_capacity(args.members);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = sent_at;
        while got.len() < args.members {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((who, s, at))) if s == seq => {
                    if got.insert(who) {
                        last = last.max(at);
                        if !warmup {
                            to_each.push(at.saturating_duration_since(sent_at));
                        }
                    }
                }
                Ok(Some(_)) => continue,
                Ok(None) => bail!("every member's client stopped"),
                Err(_) => bail!(
                    "message {seq} reached {} of {} members within {} s",
                    got.len(),
                    args.members,
                    timeout.as_secs()
                ),
            }
        }
        if warmup {
            println!(
                "  warm-up message {seq}: send -> last of {} members {:.1} ms",
                args.members,
                (last - sent_at).as_secs_f64() * 1000.0
            );
        } else {
            to_last.push(last - sent_at);
        }
        // Let the long-polls re-park before the next message.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for r in &receivers {
        r.abort();
    }

    println!("  over {:?}, {} messages", args.transport, args.messages);
    if let Some(s) = Summary::of(&to_last) {
        println!("  send -> last of {} members has it", args.members);
        println!("{s}");
    }
    if let Some(s) = Summary::of(&to_each) {
        println!("  send -> each member has it (all deliveries)");
        println!("{s}");
    }
    Ok(())
}
