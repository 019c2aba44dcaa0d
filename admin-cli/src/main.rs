//! `admin-cli`: administer a homeserver over its HTTP admin API.
//!
//! Each command group is a module of the library (`admin_cli::register`, ...);
//! this file only parses the command line and dispatches. To add a group, add a
//! module with an `Args` struct and a `run` function, and a variant below.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use admin_cli::register;

#[derive(Debug, Parser)]
#[command(name = "admin-cli", version, about = "Administer a Matrix homeserver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register a user with the registration shared secret.
    Register(register::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Register(args) => register::run(args).await,
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
