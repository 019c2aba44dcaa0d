//! `admin-cli login`: signs in as an admin (or takes an existing token),
//! checks the account really is an admin, and stores server and token.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{
    api::{Api, V1},
    config::{self, Stored, Target},
    http,
};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  admin-cli login --server https://matrix.example.org --user admin\n  ADMIN_CLI_PASSWORD=... admin-cli login --server https://matrix.example.org --user admin\n  admin-cli login --server https://matrix.example.org --token syt_...   # keep a token you have"
)]
pub struct Args {
    /// Admin user (localpart or full id). Omit with --token.
    #[arg(long, required_unless_present = "token")]
    pub user: Option<String>,
    /// The admin's password; read from stdin when neither given nor in the env.
    #[arg(long, env = "ADMIN_CLI_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

pub async fn run(
    args: Args,
    server: Option<String>,
    token: Option<String>,
    path: &Path,
) -> Result<()> {
    let stored = config::load(path)?;
    let server = server
        .or(stored.server)
        .context("pass --server with the homeserver's URL (e.g. https://matrix.example.org)")?
        .trim_end_matches('/')
        .to_owned();
    let token = match (token, args.user) {
        (Some(t), _) => t,
        (None, Some(user)) => {
            let password = match args.password {
                Some(p) => p,
                None => {
                    eprint!("password for {user}: ");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            password_login(&server, &user, &password).await?
        }
        (None, None) => bail!("pass --user (and a password) or --token"),
    };
    let api = Api::new(Target {
        server: server.clone(),
        token: token.clone(),
    })?;
    // Proves the token works and belongs to an admin before storing it.
    api.get(&format!("{V1}/server_version"))
        .await
        .context("checking the token against the admin API")?;
    let me = api.get("/_matrix/client/v3/account/whoami").await?;
    let user_id = me["user_id"].as_str().map(str::to_owned);
    config::save(
        path,
        &Stored {
            server: Some(server.clone()),
            token: Some(token),
            user_id: user_id.clone(),
        },
    )?;
    println!(
        "logged in to {server} as {}; saved to {}",
        user_id.as_deref().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

async fn password_login(server: &str, user: &str, password: &str) -> Result<String> {
    let client = http::client()?;
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        "initial_device_display_name": "admin-cli",
    });
    let resp = client
        .post(format!("{server}/_matrix/client/v3/login"))
        .json(&body)
        .send()
        .await
        .map_err(|e| http::transport_error(server, e))?;
    let answer: serde_json::Value = http::read_json(resp).await.context("logging in")?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("the login answer has no access_token")
}
