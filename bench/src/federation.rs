//! Federation between two running homeservers A and B (see
//! `scripts/federation-pair.sh`, which starts such a pair on loopback):
//!
//! 1. replication latency: a user on A sends, a user on B long-polls /sync;
//!    the time from the send to B's /sync answer, one message at a time;
//! 2. inbound PDUs/s at B: a burst sent on A (many senders at once), timed
//!    until B's client has seen every message;
//! 3. remote join: a room on A with `--members` joined users, joined by a
//!    user of B through A; the time of that one `/join` call.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{stream, StreamExt};
use reqwest::Url;
use serde_json::{json, Value};

use crate::{
    matrix::{client_url, Session},
    setup::{http_client, register_user, run_id, ServerArgs},
    stats::{ms, Summary},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Client API base URL of server A (where rooms are created).
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    pub a: String,
    /// Client API base URL of server B (the remote joiner).
    #[arg(long, default_value = "http://127.0.0.1:8018")]
    pub b: String,
    /// Server name of A, for `/join?via=`.
    #[arg(long, default_value = "hs1.localhost")]
    pub a_server: String,
    /// Registration shared secret of both servers (open registration otherwise).
    #[arg(long)]
    pub registration_shared_secret: Option<String>,
    /// Messages timed one at a time for the latency figure.
    #[arg(long, default_value_t = 300)]
    pub messages: usize,
    /// Messages in the burst for the PDUs/s figure.
    #[arg(long, default_value_t = 2000)]
    pub burst: usize,
    /// Joined members of the room the remote join enters (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
}

const FILTER: &str = r#"{"room":{"timeline":{"limit":200},"state":{"lazy_load_members":true}},"presence":{"types":[]},"account_data":{"types":[]}}"#;

fn server(base: &str, secret: &Option<String>) -> ServerArgs {
    ServerArgs {
        base_url: base.to_owned(),
        registration_shared_secret: secret.clone(),
        instances: Vec::new(),
    }
}

async fn join_via(http: &reqwest::Client, who: &Session, room: &str, via: &str) -> Result<()> {
    let mut url: Url = client_url(who.base(), &["join", room])?;
    url.query_pairs_mut().append_pair("via", via);
    let resp = http
        .post(url)
        .bearer_auth(who.token())
        .json(&json!({}))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .context("POST /join")?;
    if !resp.status().is_success() {
        bail!(
            "join failed: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Long-polls until every marker in `wanted` has been seen; returns when.
async fn await_markers(
    bob: &Session,
    since: &mut Option<String>,
    room: &str,
    wanted: &mut std::collections::HashSet<String>,
) -> Result<Instant> {
    let mut last = Instant::now();
    while !wanted.is_empty() {
        let (sync, arrived) = bob.sync(since.as_deref(), FILTER, 30_000).await?;
        *since = Some(sync.next_batch);
        if let Some(r) = sync.rooms.join.get(room) {
            for e in &r.timeline.events {
                if let Some(body) = e.content.get("body").and_then(Value::as_str) {
                    if wanted.remove(body) {
                        last = arrived;
                    }
                }
            }
        }
    }
    Ok(last)
}

pub async fn run(args: Args) -> Result<()> {
    let http = http_client()?;
    let id = run_id();
    let a = server(&args.a, &args.registration_shared_secret);
    let b = server(&args.b, &args.registration_shared_secret);
    let alice = register_user(&http, &a, &format!("fa{id}")).await?;
    let bob = register_user(&http, &b, &format!("fb{id}")).await?;
    let room = alice.create_room(&json!({"preset": "public_chat"})).await?;
    join_via(&http, &bob, &room, &args.a_server).await?;
    let (first, _) = bob.sync(None, FILTER, 0).await?;
    let mut since = Some(first.next_batch);

    // 1. One message at a time.
    let mut samples = Vec::with_capacity(args.messages);
    for i in 0..args.messages {
        let marker = format!("lat-{id}-{i}");
        let started = Instant::now();
        alice
            .send_message(
                &room,
                &format!("t{id}-{i}"),
                &json!({"msgtype": "m.text", "body": marker}),
            )
            .await?;
        let mut wanted = [marker].into_iter().collect();
        let arrived = await_markers(&bob, &mut since, &room, &mut wanted).await?;
        samples.push(arrived.saturating_duration_since(started));
    }
    if let Some(s) = Summary::of(&samples) {
        println!("replication latency A->B ({} messages): {s}", args.messages);
    }

    // 2. A burst from several senders on A.
    let senders: Vec<Session> = stream::iter(0..8)
        .map(|i| {
            let http = http.clone();
            let a = a.clone();
            let id = id.clone();
            async move { register_user(&http, &a, &format!("fs{id}x{i}")).await }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    for s in &senders {
        s.join(&room).await?;
    }
    let mut wanted: std::collections::HashSet<String> =
        (0..args.burst).map(|i| format!("burst-{id}-{i}")).collect();
    let started = Instant::now();
    let sends = stream::iter(0..args.burst)
        .map(|i| {
            let s = senders[i % senders.len()].clone();
            let room = room.clone();
            let id = id.clone();
            async move {
                s.send_message(
                    &room,
                    &format!("b{id}-{i}"),
                    &json!({"msgtype": "m.text", "body": format!("burst-{id}-{i}")}),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let (sent, last) = tokio::join!(sends, await_markers(&bob, &mut since, &room, &mut wanted));
    for r in sent {
        r?;
    }
    let elapsed = last?.saturating_duration_since(started);
    println!(
        "inbound PDUs at B: {} in {:.0} ms = {:.0} PDUs/s",
        args.burst,
        ms(elapsed),
        args.burst as f64 / elapsed.as_secs_f64()
    );

    // 3. Joining a room with many members, from the other server.
    if args.members > 0 {
        let big = alice.create_room(&json!({"preset": "public_chat"})).await?;
        let joined = stream::iter(0..args.members)
            .map(|i| {
                let http = http.clone();
                let a = a.clone();
                let id = id.clone();
                let big = big.clone();
                async move {
                    let u = register_user(&http, &a, &format!("fm{id}x{i}")).await?;
                    u.join(&big).await
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for r in joined {
            r?;
        }
        let carol = register_user(&http, &b, &format!("fc{id}")).await?;
        let started = Instant::now();
        join_via(&http, &carol, &big, &args.a_server).await?;
        println!(
            "remote join of a room with {} members: {:.0} ms",
            args.members + 1,
            ms(started.elapsed())
        );
    }
    Ok(())
}
