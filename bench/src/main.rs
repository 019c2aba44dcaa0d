//! `hs-bench`: load and latency benchmarks that drive a homeserver over the
//! Client-Server API exactly as clients do, and print their figures.
//!
//! Scenarios:
//! - `latency`: one sender, one long-polling recipient; end-to-end delivery
//!   latency percentiles.
//! - `throughput`: many concurrent senders; acknowledged messages per second,
//!   then a read-back check that nothing was lost, doubled or reordered.
//! - `fanout`: one sender, many online members; time until the last has it.
//! - `connections`: opens many idle WebSocket streams or pending /sync
//!   long-polls and reports the server's resident memory per connection.
//! - `push-rules`: push-rule evaluations per second for one message in a
//!   large room, calling the engine's evaluator in process.
//! - `media`: thumbnails/s for a 12-megapixel JPEG, upload MB/s, and the
//!   server's peak RSS while it streams a 200 MB upload.

mod connections;
mod cpu;
mod fanout;
mod federation;
mod latency;
mod load;
mod matrix;
mod media;
mod push_rules;
mod receive;
mod setup;
mod stats;
mod throughput;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hs-bench",
    version,
    about = "Benchmark a Matrix homeserver over HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send-to-/sync delivery latency in a 1:1 room, one message at a time.
    Latency(latency::Args),
    /// Acknowledged messages/s under concurrent senders, verified afterwards.
    Throughput(throughput::Args),
    /// Idle connections one server holds, and its RSS per connection.
    Connections(connections::Args),
    /// Send-to-last-member time in a room with many online members.
    Fanout(fanout::Args),
    /// Push-rule evaluations/s for one message in a large room (engine, in process).
    PushRules(push_rules::Args),
    /// Thumbnails/s for a 12 MP JPEG, upload MB/s, peak RSS of a 200 MB upload.
    Media(media::Args),
    /// Replication latency, inbound PDUs/s and remote join time between two servers.
    Federation(federation::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Latency(args) => latency::run(args).await,
        Command::Throughput(args) => throughput::run(args).await,
        Command::Connections(args) => connections::run(args).await,
        Command::Fanout(args) => fanout::run(args).await,
        Command::PushRules(args) => push_rules::run(args).await,
        Command::Media(args) => media::run(args).await,
        Command::Federation(args) => federation::run(args).await,
    };
    report(result)
}

/// Prints an error as one readable chain of causes rather than a debug dump.
fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
