//! `admin-cli media ...`: a user's uploads, quarantining an item so it can no
//! longer be downloaded, deleting uploads (one, or by age and size), and
//! purging the cache of other servers' media.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::{
    api::{enc, Api, V1},
    output::{table, Output},
};

#[derive(Debug, Subcommand)]
pub enum Media {
    /// List a user's uploads, newest first.
    #[command(after_help = "Example:\n  admin-cli media list alice")]
    List {
        user: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        from: Option<u32>,
    },
    /// Quarantine an item: downloads and thumbnails answer 404 from now on.
    #[command(after_help = "Example:\n  admin-cli media quarantine mxc://example.org/AbCdEf")]
    Quarantine { mxc: String },
    /// Release a quarantined item.
    #[command(after_help = "Example:\n  admin-cli media unquarantine mxc://example.org/AbCdEf")]
    Unquarantine { mxc: String },
    /// Delete one of this server's uploads, its thumbnails and its file.
    #[command(after_help = "Example:\n  admin-cli media delete mxc://example.org/AbCdEf --yes")]
    Delete { mxc: String },
    /// Delete this server's uploads not downloaded since a point in time.
    #[command(
        after_help = "Examples:\n  admin-cli media delete-old --before 90d --yes\n  admin-cli media delete-old --before 1735689600000 --size-gt 10485760\n  admin-cli media delete-old --before 1y --keep-profiles=false --yes"
    )]
    DeleteOld {
        /// A timestamp in milliseconds since the epoch, or an age such as
        /// 90d, 12h, 30m, 2w (that long ago).
        #[arg(long, value_parser = parse_before)]
        before: i64,
        /// Only files larger than this many bytes.
        #[arg(long, default_value_t = 0)]
        size_gt: u64,
        /// Keep files in use as a user's or a room's avatar (the default);
        /// --keep-profiles=false deletes those too.
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        keep_profiles: bool,
    },
    /// Delete cached copies of other servers' media not used since a point in
    /// time. They are fetched again when someone asks for them.
    #[command(after_help = "Example:\n  admin-cli media purge-remote --before 30d --yes")]
    PurgeRemote {
        /// A timestamp in milliseconds, or an age such as 30d.
        #[arg(long, value_parser = parse_before)]
        before: i64,
    },
}

/// `--before`: milliseconds since the epoch, or an age (`90d`) before now.
fn parse_before(value: &str) -> Result<i64, String> {
    if let Ok(ts) = value.parse::<i64>() {
        return Ok(ts);
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0)
        .ok_or_else(|| format!("{value:?} is neither a timestamp in ms nor an age like 90d"))?;
    let (n, unit) = value.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{value:?}: number too large"))?;
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => {
            return Err(format!(
                "{value:?}: unknown unit {unit:?} (use s, m, h, d, w or y)"
            ))
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    n.checked_mul(unit_ms)
        .map(|age| now - age)
        .ok_or_else(|| format!("{value:?}: too long ago"))
}

/// Prints the ids a deletion answered, and the count.
fn show_deleted(out: Output, answer: &Value) {
    out.show(answer, |a| {
        let ids = a["deleted_media"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let rows: Vec<Value> = ids.iter().map(|id| json!({ "media_id": id })).collect();
        if !rows.is_empty() {
            table(&rows, &[("deleted media id", "media_id")]);
            println!();
        }
        println!("{} deleted", a["total"]);
    });
}

/// Splits `mxc://server/id` (or `server/id`) into its parts.
fn parse_mxc(mxc: &str) -> Result<(&str, &str)> {
    mxc.strip_prefix("mxc://")
        .unwrap_or(mxc)
        .split_once('/')
        .filter(|(s, id)| !s.is_empty() && !id.is_empty() && !id.contains('/'))
        .context("expected a media URI like mxc://example.org/AbCdEf")
}

pub async fn run(cmd: Media, api: &Api, out: Output) -> Result<()> {
    match cmd {
        Media::List { user, limit, from } => {
            let id = api.user_id(&user).await?;
            let mut q = format!("limit={limit}");
            if let Some(f) = from {
                q.push_str(&format!("&from={f}"));
            }
            let list = api
                .get(&format!("{V1}/users/{}/media?{q}", enc(&id)))
                .await?;
            out.show(&list, |l| {
                table(
                    l["media"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    &[
                        ("media id", "media_id"),
                        ("type", "media_type"),
                        ("bytes", "media_length"),
                        ("name", "upload_name"),
                        ("created", "created_ts"),
                        ("quarantined by", "quarantined_by"),
                    ],
                );
                println!("\n{} items", l["total"]);
            });
        }
        Media::Quarantine { mxc } => set(api, out, &mxc, true).await?,
        Media::Unquarantine { mxc } => set(api, out, &mxc, false).await?,
        Media::Delete { mxc } => {
            let (server, id) = parse_mxc(&mxc)?;
            out.confirm(&format!(
                "This will delete {mxc} and its thumbnails for good"
            ))?;
            let answer = api
                .delete(&format!("{V1}/media/{}/{}", enc(server), enc(id)), None)
                .await?;
            show_deleted(out, &answer);
        }
        Media::DeleteOld {
            before,
            size_gt,
            keep_profiles,
        } => {
            out.confirm(&format!(
                "This will delete every local upload{} not used since {before} (ms){}",
                if size_gt > 0 {
                    format!(" over {size_gt} bytes")
                } else {
                    String::new()
                },
                if keep_profiles {
                    ", except avatars"
                } else {
                    ", avatars included"
                }
            ))?;
            let q = format!("before_ts={before}&size_gt={size_gt}&keep_profiles={keep_profiles}");
            let answer = api
                .post(&format!("{V1}/media/delete?{q}"), &json!({}))
                .await?;
            show_deleted(out, &answer);
        }
        Media::PurgeRemote { before } => {
            out.confirm(&format!(
                "This will delete cached remote media not used since {before} (ms)"
            ))?;
            let answer = api
                .post(
                    &format!("{V1}/purge_media_cache?before_ts={before}"),
                    &json!({}),
                )
                .await?;
            out.show(&answer, |a| {
                println!("{} cached items deleted", a["deleted"])
            });
        }
    }
    Ok(())
}

async fn set(api: &Api, out: Output, mxc: &str, quarantine: bool) -> Result<()> {
    let (server, id) = parse_mxc(mxc)?;
    let verb = if quarantine {
        "quarantine"
    } else {
        "unquarantine"
    };
    let done = api
        .post(
            &format!("{V1}/media/{verb}/{}/{}", enc(server), enc(id)),
            &json!({}),
        )
        .await?;
    out.show(&done, |_| println!("{mxc}: {verb}d"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_mxc;

    #[test]
    fn media_uris_are_split() {
        assert_eq!(
            parse_mxc("mxc://hs.example/abc").unwrap(),
            ("hs.example", "abc")
        );
        assert!(parse_mxc("mxc://hs.example").is_err());
        assert!(parse_mxc("mxc:///abc").is_err());
    }

    #[test]
    fn before_takes_timestamps_and_ages() {
        use super::parse_before;
        assert_eq!(parse_before("1735689600000"), Ok(1_735_689_600_000));
        let day_ago = parse_before("1d").unwrap();
        let week_ago = parse_before("1w").unwrap();
        assert!((day_ago - week_ago - 6 * 86_400_000).abs() < 10_000);
        assert!(parse_before("5x").is_err());
        assert!(parse_before("d").is_err());
        assert!(parse_before("").is_err());
    }
}
