//! The homeserver's engine: everything below the HTTP surfaces.
//!
//! Data flows one way: the HTTP crates (`client-api`, `federation`, `media-repo`)
//! call the services assembled in [`services::Services`]; the services call the
//! storage traits in [`storage`]; the backends implement those traits.

pub mod account_data;
pub mod accounts;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod core;
pub mod error;
pub mod events;
pub mod federation;
pub mod keys;
pub mod media;
pub mod presence;
pub mod push;
pub mod ratelimit;
pub mod receipts;
pub mod rooms;
pub mod services;
pub mod storage;
pub mod sync;
pub mod to_device;
pub mod typing;
pub mod util;

pub use error::{Error, Result};
