//! `admin-cli rooms ...`: list and inspect rooms, block them, shut them down,
//! purge their history.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::{
    api::{enc, Api, V1, V2},
    output::{cell, fields, table, Output},
};

#[derive(Debug, Subcommand)]
pub enum Rooms {
    /// List rooms with their member counts.
    #[command(
        after_help = "Examples:\n  admin-cli rooms list\n  admin-cli rooms list --order-by joined_members --limit 10\n  admin-cli rooms list --search general"
    )]
    List {
        /// Only rooms whose name, alias or id contains this.
        #[arg(long)]
        search: Option<String>,
        /// name, canonical_alias, joined_members, joined_local_members, version,
        /// creator, encryption, federatable, public, join_rules, guest_access,
        /// history_visibility, state_events.
        #[arg(long)]
        order_by: Option<String>,
        /// f (the order's natural direction) or b (reversed).
        #[arg(long)]
        dir: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        from: Option<u32>,
    },
    /// Show one room.
    #[command(after_help = "Example:\n  admin-cli rooms show '!abc:example.org'")]
    Show { room: String },
    /// List a room's joined members.
    Members { room: String },
    /// Print a room's current state events.
    State { room: String },
    /// Refuse every join to the room on this server.
    #[command(after_help = "Example:\n  admin-cli rooms block '!abc:example.org'")]
    Block { room: String },
    /// Allow joins again.
    Unblock { room: String },
    /// Shut a room down: every local member leaves (into a notice room if
    /// --notice-user is given), then the room is purged unless --no-purge.
    #[command(
        after_help = "Example:\n  admin-cli rooms shutdown '!abc:example.org' --notice-user @admin:example.org \\\n      --message 'This room broke the rules.' --block --yes"
    )]
    Shutdown {
        room: String,
        /// Creates a notice room and moves the members there.
        #[arg(long)]
        notice_user: Option<String>,
        #[arg(long)]
        room_name: Option<String>,
        #[arg(long)]
        message: Option<String>,
        /// Also block the room so nobody can join it again.
        #[arg(long)]
        block: bool,
        /// Keep the room's data in the database.
        #[arg(long)]
        no_purge: bool,
        /// Purge even if some members could not be removed.
        #[arg(long)]
        force_purge: bool,
    },
    /// Delete a room's messages older than a point, keeping its state.
    #[command(
        after_help = "Examples:\n  admin-cli rooms purge-history '!abc:example.org' --older-than-days 90 --yes\n  admin-cli rooms purge-history '!abc:example.org' --before-event '$ev' --include-local"
    )]
    PurgeHistory {
        room: String,
        /// Delete events before this one.
        #[arg(long, conflicts_with_all = ["before_ts", "older_than_days"])]
        before_event: Option<String>,
        /// Delete events older than this timestamp (ms since the epoch).
        #[arg(long, conflicts_with = "older_than_days")]
        before_ts: Option<i64>,
        #[arg(long)]
        older_than_days: Option<u32>,
        /// Delete this server's users' events too (by default only remote
        /// users' events go, as they have copies elsewhere).
        #[arg(long)]
        include_local: bool,
    },
}

const ROOM_COLUMNS: &[(&str, &str)] = &[
    ("room id", "room_id"),
    ("name", "name"),
    ("members", "joined_members"),
    ("local", "joined_local_members"),
    ("version", "version"),
    ("public", "public"),
];

pub async fn run(cmd: Rooms, api: &Api, out: Output) -> Result<()> {
    match cmd {
        Rooms::List {
            search,
            order_by,
            dir,
            limit,
            from,
        } => {
            let mut q = format!("limit={limit}");
            if let Some(f) = from {
                q.push_str(&format!("&from={f}"));
            }
            for (k, v) in [
                ("search_term", search),
                ("order_by", order_by),
                ("dir", dir),
            ] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let page = api.get(&format!("{V1}/rooms?{q}")).await?;
            out.show(&page, |p| {
                table(
                    p["rooms"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    ROOM_COLUMNS,
                );
                println!("\n{} rooms in total", p["total_rooms"]);
                if let Some(next) = p["next_batch"].as_i64() {
                    println!("next page: --from {next}");
                }
            });
        }
        Rooms::Show { room } => {
            out.show(
                &api.get(&format!("{V1}/rooms/{}", enc(&room))).await?,
                fields,
            );
        }
        Rooms::Members { room } => {
            let members = api
                .get(&format!("{V1}/rooms/{}/members", enc(&room)))
                .await?;
            out.show(&members, |m| {
                for u in m["members"].as_array().into_iter().flatten() {
                    println!("{}", cell(u));
                }
                println!("\n{} joined", m["total"]);
            });
        }
        Rooms::State { room } => {
            let state = api.get(&format!("{V1}/rooms/{}/state", enc(&room))).await?;
            out.show(&state, |s| {
                let rows: Vec<Value> = s["state"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        json!({"type": e["type"], "state_key": e["state_key"],
                               "sender": e["sender"], "content": e["content"].to_string()})
                    })
                    .collect();
                table(
                    &rows,
                    &[
                        ("type", "type"),
                        ("state key", "state_key"),
                        ("sender", "sender"),
                        ("content", "content"),
                    ],
                );
            });
        }
        Rooms::Block { room } => set_block(api, out, &room, true).await?,
        Rooms::Unblock { room } => set_block(api, out, &room, false).await?,
        Rooms::Shutdown {
            room,
            notice_user,
            room_name,
            message,
            block,
            no_purge,
            force_purge,
        } => {
            out.confirm(&format!(
                "This will remove every local member from {room}{}",
                if no_purge { "" } else { " and delete its data" }
            ))?;
            let notice_user = match notice_user {
                Some(u) => Some(api.user_id(&u).await?),
                None => None,
            };
            let body = json!({
                "new_room_user_id": notice_user, "room_name": room_name, "message": message,
                "block": block, "purge": !no_purge, "force_purge": force_purge,
            });
            let started = api
                .delete(&format!("{V2}/rooms/{}", enc(&room)), Some(&body))
                .await?;
            let delete_id = started["delete_id"]
                .as_str()
                .context("no delete_id in the answer")?
                .to_owned();
            let status = wait_for_deletion(api, &delete_id).await?;
            if status["status"] == "failed" {
                bail!("shutting down {room} failed: {}", cell(&status["error"]));
            }
            out.show(&status, |s| {
                let r = &s["shutdown_room"];
                println!("room {room} shut down");
                println!("members removed: {}", list(&r["kicked_users"]));
                println!("could not remove: {}", list(&r["failed_to_kick_users"]));
                println!("aliases removed: {}", list(&r["local_aliases"]));
                println!("notice room: {}", cell(&r["new_room_id"]));
            });
        }
        Rooms::PurgeHistory {
            room,
            before_event,
            before_ts,
            older_than_days,
            include_local,
        } => {
            let ts = match (before_ts, older_than_days) {
                (Some(ts), _) => Some(ts),
                (None, Some(days)) => Some(now_ms() - i64::from(days) * 86_400_000),
                _ => None,
            };
            if before_event.is_none() && ts.is_none() {
                bail!("say where to stop: --before-event, --before-ts or --older-than-days");
            }
            out.confirm(&format!("This will delete messages of {room} permanently"))?;
            let mut body = json!({"delete_local_events": include_local});
            if let Some(e) = before_event {
                body["purge_up_to_event_id"] = json!(e);
            }
            if let Some(ts) = ts {
                body["purge_up_to_ts"] = json!(ts);
            }
            let started = api
                .post(&format!("{V1}/purge_history/{}", enc(&room)), &body)
                .await?;
            let id = started["purge_id"]
                .as_str()
                .context("no purge_id in the answer")?;
            let status = api
                .get(&format!("{V1}/purge_history_status/{}", enc(id)))
                .await?;
            out.show(&status, |s| {
                println!(
                    "purge {id}: {} ({} events deleted)",
                    cell(&s["status"]),
                    cell(&s["deleted_events"])
                )
            });
        }
    }
    Ok(())
}

async fn set_block(api: &Api, out: Output, room: &str, block: bool) -> Result<()> {
    let done = api
        .put(
            &format!("{V1}/rooms/{}/block", enc(room)),
            &json!({"block": block}),
        )
        .await?;
    let state = if block { "blocked" } else { "unblocked" };
    out.show(&done, |_| println!("{room} {state}"));
    Ok(())
}

/// Polls a room deletion until it is no longer active.
async fn wait_for_deletion(api: &Api, delete_id: &str) -> Result<Value> {
    loop {
        let status = api
            .get(&format!("{V2}/rooms/delete_status/{}", enc(delete_id)))
            .await?;
        if status["status"] != "active" {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(cell).collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
