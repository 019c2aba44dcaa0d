//! Background load: messages at a fixed rate into other rooms, from other
//! users, each room followed by a long-polling recipient, so a measurement can
//! run on a busy server rather than an idle one.
//!
//! The generator is open-loop: it sends on a schedule, not after each answer,
//! up to a cap of requests in flight. When the server cannot keep up the cap
//! is reached, sends are skipped, and the achieved rate printed at the end
//! says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::matrix::Session;
use crate::receive::{self, Receiver, Transport};
use crate::setup::{self, ServerArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Background messages per second into other rooms (0: none).
    #[arg(long, default_value_t = 0)]
    pub background_rate: u64,
    /// Rooms the background load is spread over, each with its own sender
    /// and long-polling recipient.
    #[arg(long, default_value_t = 16)]
    pub background_rooms: usize,
    /// Background sends in flight at most; beyond it sends are skipped.
    #[arg(long, default_value_t = 256)]
    pub background_in_flight: usize,
}

/// A running background load.
pub struct Background {
    rate: u64,
    sent: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    started: Instant,
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl Background {
    /// Sets up the rooms and starts sending; `None` when the rate is 0.
    pub async fn start(
        http: &reqwest::Client,
        server: &ServerArgs,
        args: &LoadArgs,
        run: &str,
    ) -> Result<Option<Self>> {
        if args.background_rate == 0 {
            return Ok(None);
        }
        let mut rooms = Vec::new();
        let mut tasks = Vec::new();
        let (arrivals, mut sink) = mpsc::unbounded_channel();
        for r in 0..args.background_rooms.max(1) {
            let sender = setup::register_user(http, server, &format!("bench_{run}_bg{r}s")).await?;
            let recipient =
                setup::register_user(http, server, &format!("bench_{run}_bg{r}r")).await?;
            let room_id = sender
                .create_room(&json!({"preset": "private_chat", "invite": [recipient.user_id]}))
                .await?;
            recipient.join(&room_id).await?;
            let since = recipient.sync(None, "{}", 0).await?.0.next_batch;
            let receiver = Receiver {
                index: r,
                session: recipient,
                room_id: room_id.clone(),
                run: format!("{run}-bg"),
                since,
                source: None,
            };
            let tx = arrivals.clone();
            tasks.push(tokio::spawn(receiver.run(Transport::Longpoll, tx)));
            rooms.push((sender, room_id));
        }
        drop(arrivals);
        // Arrivals of background messages are not measured; drain them.
        tasks.push(tokio::spawn(async move {
            while sink.recv().await.is_some() {}
            Ok(())
        }));

        let bg = Background {
            rate: args.background_rate,
            sent: Arc::default(),
            skipped: Arc::default(),
            failed: Arc::default(),
            started: Instant::now(),
            tasks,
        };
        let generator = generate(
            rooms,
            args.background_rate,
            args.background_in_flight,
            format!("{run}-bg"),
            bg.sent.clone(),
            bg.skipped.clone(),
            bg.failed.clone(),
        );
        let mut bg = bg;
        bg.tasks.push(tokio::spawn(generator));
        // Let the load reach its pace before anything is measured.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Some(bg))
    }

    /// Stops the load and prints what it achieved.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let secs = self.started.elapsed().as_secs_f64();
        let sent = self.sent.load(Ordering::Relaxed);
        println!(
            "  background   {:.0} msg/s acknowledged (target {}), {} skipped at the in-flight cap, {} failed",
            sent as f64 / secs,
            self.rate,
            self.skipped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
    }
}

async fn generate(
    rooms: Vec<(Session, String)>,
    rate: u64,
    in_flight: usize,
    run: String,
    sent: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Result<()> {
    let gate = Arc::new(Semaphore::new(in_flight.max(1)));
    let start = Instant::now();
    let mut issued: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while issued < due {
            let seq = issued;
            issued += 1;
            let Ok(permit) = gate.clone().try_acquire_owned() else {
                skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (session, room_id) = rooms[(seq as usize) % rooms.len()].clone();
            let content = receive::message(&run, seq, "");
            let (sent, failed, txn) = (sent.clone(), failed.clone(), format!("{run}-{seq}"));
            tokio::spawn(async move {
                match session.send_message(&room_id, &txn, &content).await {
                    Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                drop(permit);
            });
        }
    }
}
