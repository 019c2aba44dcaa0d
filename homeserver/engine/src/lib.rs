//! The homeserver's engine: everything below the HTTP surfaces.
//!
//! Data flows one way: the HTTP crates (`client-api`, `federation`, `media-repo`)
//! call the services assembled in [`services::Services`]; the services call the
//! storage traits in [`storage`]; the backends implement those traits.

pub mod config;
pub mod error;
pub mod storage;
pub mod util;

pub use error::{Error, Result};
