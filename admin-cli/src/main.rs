//! `admin-cli`: administer a homeserver over its HTTP admin API.
//!
//! Each command group is a module of the library (`admin_cli::users`, ...);
//! this file only parses the command line and dispatches. To add a group, add a
//! module with a clap `Subcommand` enum and a `run` function, and a variant below.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use admin_cli::{
    api::Api, config, federation, http::MatrixError, login, media, output::Output, register, rooms,
    server, tokens, users,
};

const ABOUT: &str = "Administer a Matrix homeserver through its admin API.";

const LONG_ABOUT: &str = "\
Administer a Matrix homeserver through its admin API (Synapse-compatible
paths, so this tool also works against Synapse for the commands both share).

Start by logging in as a server admin; the server URL and token are saved
(mode 0600) in $XDG_CONFIG_HOME/admin-cli/config.toml:

  admin-cli login --server https://matrix.example.org --user admin

Every later command uses them. --server/--token, or ADMIN_CLI_SERVER and
ADMIN_CLI_TOKEN, override the file for one run.";

const EXAMPLES: &str = "\
Examples:
  admin-cli users list --name ali
  admin-cli users create bob --password 's3cret'
  admin-cli users deactivate @spammer:example.org --erase --yes
  admin-cli rooms list --order-by joined_members
  admin-cli rooms shutdown '!abc:example.org' --notice-user admin --block --yes
  admin-cli tokens create --uses 5
  admin-cli media delete-old --before 90d --size-gt 1048576 --yes
  admin-cli federation retry hs2.example.org
  admin-cli server stats --json
  admin-cli completions bash > /etc/bash_completion.d/admin-cli

Errors print the server's Matrix error code and message and exit with 1.";

#[derive(Debug, Parser)]
#[command(name = "admin-cli", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Cli {
    /// Homeserver base URL (overrides the saved login).
    #[arg(long, global = true, env = "ADMIN_CLI_SERVER")]
    server: Option<String>,
    /// Admin access token (overrides the saved login).
    #[arg(long, global = true, env = "ADMIN_CLI_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Config file (default: $XDG_CONFIG_HOME/admin-cli/config.toml).
    #[arg(long, global = true, env = "ADMIN_CLI_CONFIG")]
    config: Option<PathBuf>,
    /// Print the server's JSON answers instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Do not ask before destructive commands.
    #[arg(long, short = 'y', global = true)]
    yes: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in as a server admin and save the server URL and token.
    Login(login::Args),
    /// Accounts: list, show, create, modify, deactivate, devices, bans, limits.
    #[command(subcommand)]
    Users(users::Users),
    /// Rooms: list, show, members, state, block, shutdown, purge history.
    #[command(subcommand)]
    Rooms(rooms::Rooms),
    /// Media: a user's uploads, quarantine, deletion, the remote media cache.
    #[command(subcommand)]
    Media(media::Media),
    /// Registration tokens: create, list, show, update, delete.
    #[command(subcommand)]
    Tokens(tokens::Tokens),
    /// Federation: destinations and retrying one.
    #[command(subcommand)]
    Federation(federation::Federation),
    /// The server: version, statistics, notices.
    #[command(subcommand)]
    Server(server::Server),
    /// Register a user with the registration shared secret (no admin token needed).
    Register(register::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  admin-cli completions bash > ~/.local/share/bash-completion/completions/admin-cli"
    )]
    Completions { shell: clap_complete::Shell },
}

#[tokio::main]
async fn main() -> ExitCode {
    report(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> Result<()> {
    let out = Output {
        json: cli.json,
        yes: cli.yes,
    };
    let path = match cli.config {
        Some(p) => p,
        None => config::default_path()?,
    };
    let api = || -> Result<Api> {
        Api::new(config::resolve(
            cli.server.clone(),
            cli.token.clone(),
            &path,
        )?)
    };
    match cli.command {
        Command::Login(args) => {
            login::run(args, cli.server.clone(), cli.token.clone(), &path).await
        }
        Command::Users(cmd) => users::run(cmd, &api()?, out).await,
        Command::Rooms(cmd) => rooms::run(cmd, &api()?, out).await,
        Command::Media(cmd) => media::run(cmd, &api()?, out).await,
        Command::Tokens(cmd) => tokens::run(cmd, &api()?, out).await,
        Command::Federation(cmd) => federation::run(cmd, &api()?, out).await,
        Command::Server(cmd) => server::run(cmd, &api()?, out).await,
        Command::Register(args) => register::run(args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "admin-cli",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Prints an error for people: the server's Matrix error code and message
/// first when there is one, then what was being done; never a debug dump.
fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.chain().find_map(|c| c.downcast_ref::<MatrixError>()) {
                Some(m) => {
                    let code = m.errcode.as_deref().unwrap_or("HTTP error");
                    let msg = m.error.as_deref().unwrap_or(m.body.trim());
                    eprintln!("error: {code}: {msg}");
                    eprintln!("  (HTTP {}, while: {e})", m.status);
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
