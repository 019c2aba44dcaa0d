//! `admin-cli tokens ...`: registration tokens, which gate sign-up when the
//! server requires one (`registration.require_token`).

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::{
    api::{enc, Api, V1},
    output::{fields, table, Output},
};

#[derive(Debug, Subcommand)]
pub enum Tokens {
    /// Create a token; without TOKEN a random one is generated.
    #[command(
        after_help = "Examples:\n  admin-cli tokens create --uses 5\n  admin-cli tokens create spring-2026 --expires-in-days 30"
    )]
    Create {
        /// The token itself (1-64 of A-Z a-z 0-9 . _ ~ -).
        #[arg(value_name = "TOKEN")]
        name: Option<String>,
        /// How many registrations it allows (unlimited by default).
        #[arg(long)]
        uses: Option<i64>,
        #[arg(long, conflicts_with = "expiry_ms")]
        expires_in_days: Option<u32>,
        /// Expiry as milliseconds since the epoch.
        #[arg(long)]
        expiry_ms: Option<i64>,
        /// Length of a generated token.
        #[arg(long)]
        length: Option<u32>,
    },
    /// List tokens.
    #[command(after_help = "Examples:\n  admin-cli tokens list\n  admin-cli tokens list --valid")]
    List {
        /// Only tokens that can still be used.
        #[arg(long, conflicts_with = "invalid")]
        valid: bool,
        /// Only spent or expired tokens.
        #[arg(long)]
        invalid: bool,
    },
    /// Show one token.
    Show {
        #[arg(value_name = "TOKEN")]
        name: String,
    },
    /// Change a token's use limit or expiry.
    #[command(
        after_help = "Examples:\n  admin-cli tokens update spring-2026 --uses 10\n  admin-cli tokens update spring-2026 --unlimited --no-expiry"
    )]
    Update {
        #[arg(value_name = "TOKEN")]
        name: String,
        #[arg(long, conflicts_with = "unlimited")]
        uses: Option<i64>,
        /// Remove the use limit.
        #[arg(long)]
        unlimited: bool,
        #[arg(long, conflicts_with = "no_expiry")]
        expiry_ms: Option<i64>,
        /// Remove the expiry.
        #[arg(long)]
        no_expiry: bool,
    },
    /// Delete a token.
    #[command(after_help = "Example:\n  admin-cli tokens delete spring-2026 --yes")]
    Delete {
        #[arg(value_name = "TOKEN")]
        name: String,
    },
}

const COLUMNS: &[(&str, &str)] = &[
    ("token", "token"),
    ("uses allowed", "uses_allowed"),
    ("completed", "completed"),
    ("pending", "pending"),
    ("expiry (ms)", "expiry_time"),
];

pub async fn run(cmd: Tokens, api: &Api, out: Output) -> Result<()> {
    let base = format!("{V1}/registration_tokens");
    match cmd {
        Tokens::Create {
            name,
            uses,
            expires_in_days,
            expiry_ms,
            length,
        } => {
            let expiry =
                expiry_ms.or_else(|| expires_in_days.map(|d| now_ms() + i64::from(d) * 86_400_000));
            let mut body = json!({"uses_allowed": uses, "expiry_time": expiry});
            if let Some(t) = name {
                body["token"] = json!(t);
            }
            if let Some(l) = length {
                body["length"] = json!(l);
            }
            out.show(&api.post(&format!("{base}/new"), &body).await?, fields);
        }
        Tokens::List { valid, invalid } => {
            let q = if valid {
                "?valid=true"
            } else if invalid {
                "?valid=false"
            } else {
                ""
            };
            let list = api.get(&format!("{base}{q}")).await?;
            out.show(&list, |l| {
                table(
                    l["registration_tokens"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                    COLUMNS,
                )
            });
        }
        Tokens::Show { name: token } => {
            out.show(&api.get(&format!("{base}/{}", enc(&token))).await?, fields);
        }
        Tokens::Update {
            name: token,
            uses,
            unlimited,
            expiry_ms,
            no_expiry,
        } => {
            let mut body = json!({});
            if unlimited {
                body["uses_allowed"] = Value::Null;
            } else if let Some(u) = uses {
                body["uses_allowed"] = json!(u);
            }
            if no_expiry {
                body["expiry_time"] = Value::Null;
            } else if let Some(e) = expiry_ms {
                body["expiry_time"] = json!(e);
            }
            out.show(
                &api.put(&format!("{base}/{}", enc(&token)), &body).await?,
                fields,
            );
        }
        Tokens::Delete { name: token } => {
            out.confirm(&format!("This will delete registration token {token}"))?;
            let done = api.delete(&format!("{base}/{}", enc(&token)), None).await?;
            out.show(&done, |_| println!("token {token} deleted"));
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
