//! Notify requests per second through the gateway to the FCM simulator.
//!
//! `cargo bench -p hs-push-gateway --bench notify -- [--seconds N] [--concurrency C] [--devices D]`
//!
//! Starts the FCM simulator and a gateway in this process, then C clients
//! post `/notify` (D FCM devices each) back to back for N seconds over
//! keep-alive connections. Every request must answer 200 with nothing
//! rejected and every message must reach the simulator, or the run fails.
//! Prints requests/s, devices/s and latency percentiles.

use std::time::{Duration, Instant};

use push_gateway::{vendor_sim::FcmSim, Config};
use serde_json::json;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds = arg(&args, "--seconds", 10);
    let concurrency = arg(&args, "--concurrency", 64) as usize;
    let devices = arg(&args, "--devices", 1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(seconds, concurrency, devices))
}

async fn run(seconds: u64, concurrency: usize, devices: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("push-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let fcm = FcmSim::start().await?;
    let mut config = Config::from_toml("listen = \"127.0.0.1:0\"", std::iter::empty())?;
    config
        .apps
        .insert("im.bench.android".into(), fcm.app_config(&dir)?);
    let gateway = push_gateway::start(config).await?;
    let url = gateway.notify_url();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..concurrency).map(|w| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let devs: Vec<_> = (0..devices)
                    .map(|d| json!({ "app_id": "im.bench.android", "pushkey": format!("w{w}-d{d}") }))
                    .collect();
                let body = json!({ "notification": {
                    "event_id": format!("$w{w}-{n}"), "room_id": "!bench:example.org",
                    "type": "m.room.message", "sender": "@alice:example.org",
                    "content": { "msgtype": "m.text", "body": "benchmark message" },
                    "counts": { "unread": 1 }, "devices": devs,
                }});
                let started = Instant::now();
                let response = client.post(&url).json(&body).send().await?;
                let status = response.status();
                let answer: serde_json::Value = response.json().await?;
                if status != 200 || answer != json!({ "rejected": [] }) {
                    anyhow::bail!("unexpected answer {status}: {answer}");
                }
                latencies.push(started.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        })
    });
    let started = Instant::now();
    let mut latencies = Vec::new();
    for worker in futures::future::join_all(workers).await {
        latencies.extend(worker??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = fcm.delivered().len();
    let expected = latencies.len() * devices;
    if delivered != expected {
        anyhow::bail!("the simulator received {delivered} messages, expected {expected}");
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "push-gateway notify: {} requests ({} devices each) in {elapsed:.1}s with {concurrency} clients",
        latencies.len(),
        devices
    );
    println!(
        "  {:.0} notify requests/s, {:.0} FCM messages/s; latency p50 {:.2} ms, p99 {:.2} ms; OAuth exchanges: {}",
        latencies.len() as f64 / elapsed,
        delivered as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        fcm.token_exchanges()
    );
    gateway.shutdown().await;
    fcm.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
