//! `admin-cli federation ...`: the servers we send to, and retrying one now.

use anyhow::Result;
use clap::Subcommand;

use crate::{
    api::{enc, Api, V1},
    output::{fields, table, Output},
};

#[derive(Debug, Subcommand)]
pub enum Federation {
    /// List destinations with their last failure, backoff and queue.
    #[command(
        after_help = "Examples:\n  admin-cli federation destinations\n  admin-cli federation destinations --order-by failure_ts --dir b"
    )]
    Destinations {
        /// destination, retry_interval or failure_ts.
        #[arg(long)]
        order_by: Option<String>,
        #[arg(long)]
        dir: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        from: Option<String>,
    },
    /// Show one destination.
    #[command(after_help = "Example:\n  admin-cli federation show hs2.example.org")]
    Show { destination: String },
    /// Clear a destination's backoff so the next send is tried at once.
    #[command(after_help = "Example:\n  admin-cli federation retry hs2.example.org")]
    Retry { destination: String },
}

pub async fn run(cmd: Federation, api: &Api, out: Output) -> Result<()> {
    let base = format!("{V1}/federation/destinations");
    match cmd {
        Federation::Destinations {
            order_by,
            dir,
            limit,
            from,
        } => {
            let mut q = format!("limit={limit}");
            for (k, v) in [("order_by", order_by), ("dir", dir), ("from", from)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let list = api.get(&format!("{base}?{q}")).await?;
            out.show(&list, |l| {
                table(
                    l["destinations"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                    &[
                        ("destination", "destination"),
                        ("queued", "queued"),
                        ("backoff (ms)", "retry_interval"),
                        ("last failure", "failure_ts"),
                        ("last error", "last_error"),
                    ],
                );
                println!("\n{} destinations", l["total"]);
            });
        }
        Federation::Show { destination } => {
            out.show(
                &api.get(&format!("{base}/{}", enc(&destination))).await?,
                fields,
            );
        }
        Federation::Retry { destination } => {
            let done = api
                .post(
                    &format!("{base}/{}/reset_connection", enc(&destination)),
                    &serde_json::json!({}),
                )
                .await?;
            out.show(&done, |_| {
                println!("{destination}: backoff cleared, retrying")
            });
        }
    }
    Ok(())
}
