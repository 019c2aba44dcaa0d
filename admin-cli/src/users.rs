//! `admin-cli users ...`: accounts, their devices, shadow bans and
//! rate-limit overrides. USER is a full id (`@alice:example.org`) or a bare
//! localpart (`alice`).

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::{
    api::{enc, Api, V1, V2},
    output::{fields, table, Output},
};

#[derive(Debug, Subcommand)]
pub enum Users {
    /// List accounts, 100 per page by default.
    #[command(
        after_help = "Examples:\n  admin-cli users list\n  admin-cli users list --name ali --deactivated\n  admin-cli users list --order-by creation_ts --dir b --limit 20"
    )]
    List {
        /// Only users whose id or display name contains this.
        #[arg(long)]
        name: Option<String>,
        /// Include deactivated accounts.
        #[arg(long)]
        deactivated: bool,
        /// Only server admins.
        #[arg(long)]
        admins: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Offset: the `next_token` of the previous page.
        #[arg(long)]
        from: Option<String>,
        /// name, admin, deactivated, shadow_banned, displayname, creation_ts, last_seen_ts.
        #[arg(long)]
        order_by: Option<String>,
        /// f (ascending) or b (descending).
        #[arg(long)]
        dir: Option<String>,
    },
    /// Show one account.
    #[command(after_help = "Example:\n  admin-cli users show @alice:example.org")]
    Show { user: String },
    /// Create an account.
    #[command(
        after_help = "Example:\n  admin-cli users create alice --password 's3cret' --displayname Alice"
    )]
    Create {
        user: String,
        /// Without one the account cannot log in with a password.
        #[arg(long, env = "ADMIN_CLI_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        displayname: Option<String>,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// Change an account's password, display name, avatar or admin flag.
    #[command(
        after_help = "Examples:\n  admin-cli users modify alice --displayname 'Alice A.'\n  admin-cli users modify alice --admin true"
    )]
    Modify {
        user: String,
        #[arg(long, env = "ADMIN_CLI_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        displayname: Option<String>,
        #[arg(long)]
        avatar_url: Option<String>,
        #[arg(long)]
        admin: Option<bool>,
        /// With --password: keep the account's sessions logged in.
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Deactivate an account: it leaves every room and every session ends.
    #[command(
        after_help = "Example:\n  admin-cli users deactivate @spammer:example.org --erase --yes"
    )]
    Deactivate {
        user: String,
        /// Also remove the display name and avatar and mark the user erased.
        #[arg(long)]
        erase: bool,
    },
    /// Set a new password and (by default) log every session out.
    #[command(
        after_help = "Example:\n  admin-cli users reset-password alice --password 'n3w-s3cret'"
    )]
    ResetPassword {
        user: String,
        #[arg(long, env = "ADMIN_CLI_NEW_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        keep_sessions: bool,
    },
    /// List an account's devices (sessions).
    #[command(after_help = "Example:\n  admin-cli users devices alice")]
    Devices { user: String },
    /// Log one device out.
    #[command(after_help = "Example:\n  admin-cli users delete-device alice ABCDEFGHIJ --yes")]
    DeleteDevice { user: String, device: String },
    /// Log every device of an account out.
    #[command(after_help = "Example:\n  admin-cli users logout alice --yes")]
    Logout { user: String },
    /// Shadow-ban: the user's messages seem sent to them but reach nobody.
    #[command(
        after_help = "Examples:\n  admin-cli users shadow-ban @troll:example.org\n  admin-cli users shadow-ban @troll:example.org --off"
    )]
    ShadowBan {
        user: String,
        /// Lift the shadow ban.
        #[arg(long)]
        off: bool,
    },
    /// Show, set or clear an account's message rate-limit override.
    #[command(
        after_help = "Examples:\n  admin-cli users ratelimit bot                       # show\n  admin-cli users ratelimit bot --messages-per-second 0 --burst 0   # unlimited\n  admin-cli users ratelimit bot --clear"
    )]
    Ratelimit {
        user: String,
        #[arg(long, requires = "burst")]
        messages_per_second: Option<i64>,
        #[arg(long, requires = "messages_per_second")]
        burst: Option<i64>,
        /// Remove the override: the server's defaults apply again.
        #[arg(long, conflicts_with_all = ["messages_per_second", "burst"])]
        clear: bool,
    },
}

fn user_fields(v: &Value) {
    fields(v);
}

const USER_COLUMNS: &[(&str, &str)] = &[
    ("user id", "name"),
    ("display name", "displayname"),
    ("admin", "admin"),
    ("deactivated", "deactivated"),
    ("shadow banned", "shadow_banned"),
];

pub async fn run(cmd: Users, api: &Api, out: Output) -> Result<()> {
    match cmd {
        Users::List {
            name,
            deactivated,
            admins,
            limit,
            from,
            order_by,
            dir,
        } => {
            let mut q = format!("limit={limit}&deactivated={deactivated}");
            if admins {
                q.push_str("&admins=true");
            }
            for (k, v) in [
                ("name", name),
                ("from", from),
                ("order_by", order_by),
                ("dir", dir),
            ] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let page = api.get(&format!("{V2}/users?{q}")).await?;
            out.show(&page, |p| {
                table(
                    p["users"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    USER_COLUMNS,
                );
                println!(
                    "\n{} of {} users",
                    p["users"].as_array().map_or(0, Vec::len),
                    p["total"]
                );
                if let Some(next) = p["next_token"].as_str() {
                    println!("next page: --from {next}");
                }
            });
        }
        Users::Show { user } => {
            let id = api.user_id(&user).await?;
            out.show(
                &api.get(&format!("{V2}/users/{}", enc(&id))).await?,
                user_fields,
            );
        }
        Users::Create {
            user,
            password,
            displayname,
            admin,
        } => {
            let id = api.user_id(&user).await?;
            let path = format!("{V2}/users/{}", enc(&id));
            if api.get(&path).await.is_ok() {
                bail!("{id} already exists (use `admin-cli users modify`)");
            }
            let mut body = json!({"admin": admin});
            if let Some(p) = password {
                body["password"] = json!(p);
            }
            if let Some(d) = displayname {
                body["displayname"] = json!(d);
            }
            out.show(&api.put(&path, &body).await?, user_fields);
        }
        Users::Modify {
            user,
            password,
            displayname,
            avatar_url,
            admin,
            keep_sessions,
        } => {
            let id = api.user_id(&user).await?;
            let path = format!("{V2}/users/{}", enc(&id));
            // Modify never creates: the account must exist.
            api.get(&path).await?;
            let mut body = json!({"logout_devices": !keep_sessions});
            for (k, v) in [
                ("password", password),
                ("displayname", displayname),
                ("avatar_url", avatar_url),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(a) = admin {
                body["admin"] = json!(a);
            }
            out.show(&api.put(&path, &body).await?, user_fields);
        }
        Users::Deactivate { user, erase } => {
            let id = api.user_id(&user).await?;
            let what = if erase {
                "deactivate and erase"
            } else {
                "deactivate"
            };
            out.confirm(&format!("This will {what} {id}, ending all its sessions"))?;
            let done = api
                .post(
                    &format!("{V1}/deactivate/{}", enc(&id)),
                    &json!({"erase": erase}),
                )
                .await?;
            out.show(&done, |_| println!("deactivated {id}"));
        }
        Users::ResetPassword {
            user,
            password,
            keep_sessions,
        } => {
            let id = api.user_id(&user).await?;
            let body = json!({"new_password": password, "logout_devices": !keep_sessions});
            let done = api
                .post(&format!("{V1}/reset_password/{}", enc(&id)), &body)
                .await?;
            out.show(&done, |_| println!("password of {id} reset"));
        }
        Users::Devices { user } => {
            let id = api.user_id(&user).await?;
            let devices = api.get(&format!("{V2}/users/{}/devices", enc(&id))).await?;
            out.show(&devices, |d| {
                table(
                    d["devices"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    &[
                        ("device", "device_id"),
                        ("name", "display_name"),
                        ("last seen ip", "last_seen_ip"),
                        ("last seen ts", "last_seen_ts"),
                    ],
                )
            });
        }
        Users::DeleteDevice { user, device } => {
            let id = api.user_id(&user).await?;
            out.confirm(&format!("This will log device {device} of {id} out"))?;
            let path = format!("{V2}/users/{}/devices/{}", enc(&id), enc(&device));
            let done = api.delete(&path, None).await?;
            out.show(&done, |_| println!("device {device} of {id} logged out"));
        }
        Users::Logout { user } => {
            let id = api.user_id(&user).await?;
            out.confirm(&format!("This will log every session of {id} out"))?;
            let devices = api.get(&format!("{V2}/users/{}/devices", enc(&id))).await?;
            let ids: Vec<Value> = devices["devices"]
                .as_array()
                .map(|d| d.iter().map(|d| d["device_id"].clone()).collect())
                .unwrap_or_default();
            let n = ids.len();
            let done = api
                .post(
                    &format!("{V2}/users/{}/delete_devices", enc(&id)),
                    &json!({"devices": ids}),
                )
                .await?;
            out.show(&done, |_| println!("{n} sessions of {id} logged out"));
        }
        Users::ShadowBan { user, off } => {
            let id = api.user_id(&user).await?;
            let path = format!("{V1}/users/{}/shadow_ban", enc(&id));
            let done = if off {
                api.delete(&path, None).await?
            } else {
                api.post(&path, &json!({})).await?
            };
            let state = if off { "lifted" } else { "in place" };
            out.show(&done, |_| println!("shadow ban of {id} {state}"));
        }
        Users::Ratelimit {
            user,
            messages_per_second,
            burst,
            clear,
        } => {
            let id = api.user_id(&user).await?;
            let path = format!("{V1}/users/{}/override_ratelimit", enc(&id));
            let answer = match (messages_per_second, burst, clear) {
                (_, _, true) => api.delete(&path, None).await?,
                (Some(m), Some(b), false) => {
                    api.post(&path, &json!({"messages_per_second": m, "burst_count": b}))
                        .await?
                }
                _ => api.get(&path).await?,
            };
            out.show(&answer, |a| {
                if a.as_object().is_some_and(|o| o.is_empty()) {
                    println!("{id}: server defaults");
                } else {
                    fields(a);
                }
            });
        }
    }
    Ok(())
}
