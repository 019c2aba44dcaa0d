//! `hs-bench throughput`: how many messages per second the server
//! acknowledges under concurrent senders, and whether it kept all of them.
//!
//! `--concurrency` users each send their share of `--messages`, one request in
//! flight per user, into `--rooms` rooms (sender `i` uses room `i % rooms`).
//! Afterwards every room is read back through `/messages`: each acknowledged
//! message must be there exactly once, and each sender's messages in the order
//! they were sent.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::future::try_join_all;
use serde_json::json;

use crate::matrix::Session;
use crate::setup::{self, ServerArgs};
use crate::stats::Summary;

/// Key under which each message carries its run, sender and sequence number.
const MARKER: &str = "dev.hs_bench";
/// Page size asked of `/messages` when verifying (the server may cap it).
const PAGE: u32 = 1000;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Total messages to send, split evenly across senders.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Concurrent senders (one user each, one request in flight each).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Rooms the senders are spread over; at most --concurrency.
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    /// Pad each message body to this many bytes.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// `NAME=PID` of a server process to report CPU time for (with its
    /// descendants, e.g. a PostgreSQL postmaster); repeatable, same machine.
    #[arg(long = "cpu")]
    pub cpu: Vec<crate::cpu::Watched>,
}

/// What one sender got done.
#[derive(Default)]
struct SenderReport {
    /// Sequence numbers the server acknowledged with an event id.
    acked: Vec<u64>,
    ack_latencies: Vec<Duration>,
    failed: u64,
    first_error: Option<String>,
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    ensure!(
        (1..=args.concurrency).contains(&args.rooms),
        "--rooms must be between 1 and --concurrency"
    );
    let http = setup::http_client()?;
    let run = setup::run_id();

    let senders = try_join_all((0..args.concurrency).map(|i| {
        let (http, server) = (&http, &args.server);
        let name = format!("bench_{run}_s{i}");
        async move { setup::register_user(http, server, &name).await }
    }))
    .await
    .context("registering senders")?;
    // Senders spread over the instances (one instance unless --instance is given).
    let instances = args.server.instance_urls()?;
    let senders: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(i, s)| s.on(&instances[i % instances.len()]))
        .collect();
    let rooms = create_rooms(&senders, args.rooms, &run).await?;

    println!(
        "hs-bench throughput: {} messages, {} senders, {} rooms, run {run}",
        args.messages, args.concurrency, args.rooms
    );

    let padding = "x".repeat(args.body_bytes);
    let per_sender = args.messages / args.concurrency as u64;
    let remainder = args.messages % args.concurrency as u64;
    let cpu_before = crate::cpu::sample(&args.cpu);
    let started = Instant::now();
    let tasks = senders.iter().enumerate().map(|(i, sender)| {
        let quota = per_sender + u64::from((i as u64) < remainder);
        send_all(
            sender.clone(),
            rooms[i % rooms.len()].clone(),
            i,
            quota,
            run.clone(),
            padding.clone(),
        )
    });
    let reports = futures::future::join_all(tasks.map(tokio::spawn)).await;
    let elapsed = started.elapsed();
    let cpu_after = crate::cpu::sample(&args.cpu);
    let reports: Vec<SenderReport> = reports
        .into_iter()
        .collect::<Result<_, _>>()
        .context("a sender task panicked")?;

    let acked: u64 = reports.iter().map(|r| r.acked.len() as u64).sum();
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    println!(
        "  acknowledged  {acked} of {} in {:.3} s",
        args.messages,
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput    {:.1} msg/s acknowledged",
        acked as f64 / elapsed.as_secs_f64()
    );
    if failed > 0 {
        let first = reports.iter().find_map(|r| r.first_error.as_deref());
        println!(
            "  failed        {failed} (first error: {})",
            first.unwrap_or("?")
        );
    }
    let latencies: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.ack_latencies.iter().copied())
        .collect();
    if let Some(summary) = Summary::of(&latencies) {
        println!("  send acknowledgement (PUT round trip under load)");
        println!("{summary}");
    }
    crate::cpu::report(
        &args.cpu,
        &cpu_before,
        &cpu_after,
        elapsed.as_secs_f64(),
        acked,
        "message",
    );
    let retries: u64 = senders.iter().map(Session::rate_limited_retries).sum();
    if retries > 0 {
        println!("  WARNING: {retries} requests were rate-limited and retried; figures include the waits");
    }

    let problems = verify(&senders[0], &rooms, &reports, &run).await?;
    if problems > 0 || failed > 0 {
        bail!("{problems} verification problems, {failed} failed sends");
    }
    Ok(())
}

/// Sender 0 creates the rooms and invites the senders assigned to each; they
/// join.
async fn create_rooms(senders: &[Session], count: usize, run: &str) -> Result<Vec<String>> {
    let mut rooms = Vec::with_capacity(count);
    for r in 0..count {
        let invite: Vec<&str> = senders
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(i, _)| i % count == r)
            .map(|(_, s)| s.user_id.as_str())
            .collect();
        let room_id = senders[0]
            .create_room(&json!({
                "preset": "private_chat",
                "name": format!("hs-bench {run} room {r}"),
                "invite": invite,
            }))
            .await?;
        rooms.push(room_id);
    }
    try_join_all(
        senders
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, s)| s.join(&rooms[i % count])),
    )
    .await?;
    Ok(rooms)
}

/// One sender: `quota` messages, strictly one after another.
async fn send_all(
    session: Session,
    room_id: String,
    sender: usize,
    quota: u64,
    run: String,
    padding: String,
) -> SenderReport {
    let mut report = SenderReport::default();
    for seq in 0..quota {
        let content = json!({
            "msgtype": "m.text",
            "body": format!("hs-bench {sender}/{seq} {padding}"),
            MARKER: { "run": run, "sender": sender, "seq": seq },
        });
        let txn_id = format!("{run}-{sender}-{seq}");
        let sent_at = Instant::now();
        match session.send_message(&room_id, &txn_id, &content).await {
            Ok(_event_id) => {
                report.ack_latencies.push(sent_at.elapsed());
                report.acked.push(seq);
            }
            Err(e) => {
                report.failed += 1;
                report.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    report
}

/// Reads every room back and compares it with what was acknowledged; prints
/// one line per room and returns the number of problems found.
async fn verify(
    reader: &Session,
    rooms: &[String],
    reports: &[SenderReport],
    run: &str,
) -> Result<u64> {
    let mut problems = 0;
    for (r, room_id) in rooms.iter().enumerate() {
        let expected: HashSet<(usize, u64)> = reports
            .iter()
            .enumerate()
            .filter(|(i, _)| i % rooms.len() == r)
            .flat_map(|(i, rep)| rep.acked.iter().map(move |&seq| (i, seq)))
            .collect();
        let found = read_room(reader, room_id, run).await?;
        let check = Check::new(&expected, &found);
        println!(
            "  verify {room_id}: expected {}, found {}, missing {}, duplicated {}, unexpected {}, out of order {}",
            expected.len(),
            found.len(),
            check.missing,
            check.duplicated,
            check.unexpected,
            check.out_of_order
        );
        problems += check.missing + check.duplicated + check.unexpected + check.out_of_order;
    }
    if problems == 0 {
        println!("  verified: every acknowledged message is present exactly once, in send order");
    }
    Ok(problems)
}

/// This run's `(sender, seq)` markers in a room, oldest first.
async fn read_room(reader: &Session, room_id: &str, run: &str) -> Result<Vec<(usize, u64)>> {
    let mut found = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let page = reader
            .messages_forward(room_id, from.as_deref(), PAGE)
            .await?;
        for event in &page.chunk {
            let marker = &event.content[MARKER];
            if event.kind != "m.room.message" || marker["run"].as_str() != Some(run) {
                continue;
            }
            if let (Some(sender), Some(seq)) = (marker["sender"].as_u64(), marker["seq"].as_u64()) {
                found.push((sender as usize, seq));
            }
        }
        match page.end {
            Some(end) if !page.chunk.is_empty() && from.as_deref() != Some(end.as_str()) => {
                from = Some(end);
            }
            _ => return Ok(found),
        }
    }
}

/// The comparison of one room's contents with what was acknowledged.
#[derive(Debug, Default, PartialEq)]
struct Check {
    missing: u64,
    duplicated: u64,
    unexpected: u64,
    out_of_order: u64,
}

impl Check {
    fn new(expected: &HashSet<(usize, u64)>, found: &[(usize, u64)]) -> Check {
        let mut check = Check::default();
        let mut seen: HashSet<(usize, u64)> = HashSet::new();
        let mut last_seq: HashMap<usize, u64> = HashMap::new();
        for &(sender, seq) in found {
            if !seen.insert((sender, seq)) {
                check.duplicated += 1;
                continue;
            }
            if !expected.contains(&(sender, seq)) {
                check.unexpected += 1;
            }
            if let Some(&last) = last_seq.get(&sender) {
                if seq < last {
                    check.out_of_order += 1;
                }
            }
            last_seq.insert(sender, seq);
        }
        check.missing = expected.difference(&seen).count() as u64;
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(usize, u64)]) -> HashSet<(usize, u64)> {
        items.iter().copied().collect()
    }

    #[test]
    fn interleaved_senders_in_order_pass() {
        let expected = set(&[(0, 0), (0, 1), (1, 0), (1, 1)]);
        let found = [(1, 0), (0, 0), (0, 1), (1, 1)];
        assert_eq!(Check::new(&expected, &found), Check::default());
    }

    #[test]
    fn every_kind_of_problem_is_counted() {
        let expected = set(&[(0, 0), (0, 1), (0, 2), (1, 0)]);
        // (0,1) duplicated, (0,0) after (0,2), (1,0) missing, (2,0) unexpected.
        let found = [(0, 1), (0, 2), (0, 0), (0, 1), (2, 0)];
        assert_eq!(
            Check::new(&expected, &found),
            Check {
                missing: 1,
                duplicated: 1,
                unexpected: 1,
                out_of_order: 1,
            }
        );
    }
}
