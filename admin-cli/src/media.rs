//! `admin-cli media ...`: a user's uploads, and quarantining an item so it
//! can no longer be downloaded.

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;

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
}
