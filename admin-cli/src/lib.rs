//! Operator tooling for the homeserver, spoken entirely over HTTP.
//!
//! The binary (`src/main.rs`) only parses the command line; each command group
//! lives in its own module here so that other tools (the benchmarks, tests) can
//! reuse the same calls without shelling out.
//!
//! Command groups, each mirroring an area of the admin API:
//! - [`login`]: sign in and store the server URL and token ([`config`]);
//! - [`users`], [`rooms`], [`media`], [`tokens`] (registration tokens), [`federation`],
//!   [`server`];
//! - [`register`]: Synapse-compatible shared-secret registration
//!   (`/_synapse/admin/v1/register`).
//!
//! [`api`] is the authenticated client, [`output`] prints tables or JSON.

pub mod api;
pub mod config;
pub mod federation;
pub mod http;
pub mod login;
pub mod media;
pub mod output;
pub mod register;
pub mod rooms;
pub mod server;
pub mod tokens;
pub mod users;
