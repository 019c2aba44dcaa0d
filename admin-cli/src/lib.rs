//! Operator tooling for the homeserver, spoken entirely over HTTP.
//!
//! The binary (`src/main.rs`) only parses the command line; each command group
//! lives in its own module here so that other tools (the benchmarks, tests) can
//! reuse the same calls without shelling out.
//!
//! Command groups:
//! - [`register`]: Synapse-compatible shared-secret registration
//!   (`/_synapse/admin/v1/register`).

pub mod http;
pub mod register;
