//! `hs-bench latency`: end-to-end delivery latency of a 1:1 dialog.
//!
//! Alice and Bob share a fresh direct room. Bob follows it over a `/sync`
//! long-poll, as a phone client would, or over the WebSocket stream
//! (`--transport ws`). Alice sends one message at a time; each message's
//! latency runs from just before her `PUT /send` until Bob's client has it.
//! Sending one at a time means every figure is a round trip, not a queueing
//! artefact of this client. `--background-rate` adds a steady load of other
//! users' messages in other rooms, to measure the same round trip on a busy
//! server.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::load::{Background, LoadArgs};
use crate::receive::{self, Arrival, Receiver, Transport};
use crate::setup::{self, ServerArgs};
use crate::stats::Summary;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// How Bob receives: `/sync` long-polls or the WebSocket stream.
    #[arg(long, value_enum, default_value = "longpoll")]
    pub transport: Transport,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Messages to measure.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Messages sent first and not measured (warms connections and caches).
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// Pad each message body to this many bytes (the product brief's typical
    /// text message is about 1 KB).
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Give up if a message has not reached Bob's /sync within this many seconds.
    #[arg(long, default_value_t = 10)]
    pub message_timeout_secs: u64,
    /// `NAME=PID` of a server process to report CPU time for over the
    /// measured messages (each a send plus one delivery); repeatable.
    #[arg(long = "cpu")]
    pub cpu: Vec<crate::cpu::Watched>,
}

pub async fn run(args: Args) -> Result<()> {
    let http = setup::http_client()?;
    let run = setup::run_id();

    let alice = setup::register_user(&http, &args.server, &format!("bench_{run}_alice")).await?;
    let bob = setup::register_user(&http, &args.server, &format!("bench_{run}_bob")).await?;
    let room_id = alice
        .create_room(&json!({
            "preset": "private_chat",
            "is_direct": true,
            "invite": [bob.user_id],
        }))
        .await?;
    bob.join(&room_id).await?;
    // With several instances, Bob receives through the last one: every
    // message crosses instances.
    let instances = args.server.instance_urls()?;
    let bob = match instances.last() {
        Some(url) if instances.len() > 1 => bob.on(url),
        _ => bob,
    };

    // Catch Bob up first, so his long-poll starts after the join and only
    // new messages wake it.
    let filter = receive::sync_filter(&room_id);
    let (initial, _) = bob
        .sync(None, &filter, 0)
        .await
        .context("Bob's initial sync")?;
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let receiver = Receiver {
        index: 0,
        session: bob.clone(),
        room_id: room_id.clone(),
        run: run.clone(),
        since: initial.next_batch,
        source: None,
    };
    let mut syncer = tokio::spawn(receiver.run(args.transport, arrivals_tx));
    let background = Background::start(&http, &args.server, &args.load, &run).await?;

    println!(
        "hs-bench latency: {} messages ({} warm-up) from {} to {} in {room_id}, over {:?}, background {} msg/s",
        args.messages, args.warmup, alice.user_id, bob.user_id, args.transport, args.load.background_rate
    );

    let timeout = Duration::from_secs(args.message_timeout_secs);
    let padding = "x".repeat(args.body_bytes);
    let mut end_to_end = Vec::with_capacity(args.messages as usize);
    let mut acks = Vec::with_capacity(args.messages as usize);
    let mut measured_start = Instant::now();
    let mut cpu_before = crate::cpu::sample(&args.cpu);

    for seq in 0..args.warmup + args.messages {
        if seq == args.warmup {
            measured_start = Instant::now();
            cpu_before = crate::cpu::sample(&args.cpu);
        }
        let content = receive::message(&run, seq, &padding);
        let txn_id = format!("{run}-{seq}");

        let sent_at = Instant::now();
        alice.send_message(&room_id, &txn_id, &content).await?;
        let acked_at = Instant::now();
        let arrived_at = wait_for(&mut arrivals, seq, timeout, &mut syncer).await?;

        if seq >= args.warmup {
            acks.push(acked_at - sent_at);
            end_to_end.push(arrived_at.saturating_duration_since(sent_at));
        }
    }
    let elapsed = measured_start.elapsed();
    let cpu_after = crate::cpu::sample(&args.cpu);
    syncer.abort();
    if let Some(bg) = background {
        bg.stop();
    }

    if let Some(summary) = Summary::of(&end_to_end) {
        println!("  end-to-end latency (PUT start -> Bob's client has it)");
        println!("{summary}");
    }
    if let Some(summary) = Summary::of(&acks) {
        println!("  send acknowledgement (PUT round trip)");
        println!("{summary}");
    }
    println!(
        "  throughput  {:.1} msg/s (one message in flight, {} in {:.3} s)",
        end_to_end.len() as f64 / elapsed.as_secs_f64(),
        end_to_end.len(),
        elapsed.as_secs_f64()
    );
    crate::cpu::report(
        &args.cpu,
        &cpu_before,
        &cpu_after,
        elapsed.as_secs_f64(),
        end_to_end.len() as u64,
        "message",
    );
    let retries = alice.rate_limited_retries() + bob.rate_limited_retries();
    if retries > 0 {
        println!("  WARNING: {retries} requests were rate-limited and retried; figures include the waits");
    }
    Ok(())
}

/// Waits until the sync loop reports message `seq`, skipping any other.
async fn wait_for(
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    seq: u64,
    timeout: Duration,
    syncer: &mut JoinHandle<Result<()>>,
) -> Result<Instant> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some((_, got, at))) if got == seq => return Ok(at),
            Ok(Some(_)) => continue,
            // The channel only closes when the sync loop has ended, which it
            // does only on an error: surface that error.
            Ok(None) => {
                let why = match syncer.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow::anyhow!("it returned"),
                    Err(e) => anyhow::Error::new(e),
                };
                return Err(why.context(format!(
                    "Bob's sync loop stopped before message {seq} arrived"
                )));
            }
            Err(_) => bail!(
                "message {seq} did not reach Bob's /sync within {} s",
                timeout.as_secs()
            ),
        }
    }
}
