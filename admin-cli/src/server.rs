//! `admin-cli server ...`: version, statistics, server notices.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::{
    api::{Api, V1},
    output::{cell, fields, Output},
};

#[derive(Debug, Subcommand)]
pub enum Server {
    /// The server's version.
    Version,
    /// Users, rooms, events today, open connections and federation queues.
    #[command(after_help = "Example:\n  admin-cli server stats --json | jq .events_today")]
    Stats,
    /// Send a message from the server to a user (a server notice).
    #[command(
        after_help = "Example:\n  admin-cli server notice @alice:example.org 'Maintenance tonight at 02:00 UTC.'"
    )]
    Notice { user: String, message: String },
}

pub async fn run(cmd: Server, api: &Api, out: Output) -> Result<()> {
    match cmd {
        Server::Version => {
            let v = api.get(&format!("{V1}/server_version")).await?;
            out.show(&v, |v| println!("{}", cell(&v["server_version"])));
        }
        Server::Stats => {
            let stats = api.get(&format!("{V1}/statistics/server")).await?;
            out.show(&stats, |s| {
                let mut flat = s.clone();
                if let Some(o) = flat.as_object_mut() {
                    o.remove("federation_queues");
                }
                fields(&flat);
                for q in s["federation_queues"].as_array().into_iter().flatten() {
                    println!(
                        "queue to {}: {}",
                        cell(&q["destination"]),
                        cell(&q["queued"])
                    );
                }
            });
        }
        Server::Notice { user, message } => {
            let user_id = api.user_id(&user).await?;
            let body =
                json!({"user_id": user_id, "content": {"msgtype": "m.text", "body": message}});
            let sent = api.post(&format!("{V1}/send_server_notice"), &body).await?;
            out.show(&sent, |s| {
                println!("notice sent to {user_id}: {}", cell(&s["event_id"]))
            });
        }
    }
    Ok(())
}
