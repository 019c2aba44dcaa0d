//! /sync: stream positions, the notifier, filters and the sync engine.

pub mod e2ee;
mod engine;
pub mod filter;
pub mod journal;
pub mod notifier;
pub mod stream;

pub use engine::{SyncRequest, SyncService, STRIPPED_STATE};

use crate::error::{Error, Result};
use crate::storage::StreamPos;

/// Sync and pagination tokens are `s<position>`.
pub fn parse_token(token: &str) -> Result<StreamPos> {
    token
        .strip_prefix('s')
        .and_then(|n| n.split('_').next())
        .and_then(|n| n.parse::<StreamPos>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::invalid_param("Invalid pagination or sync token."))
}

/// A `/messages` token: like a sync token, but it may point into history
/// backfilled from other servers, which sits below position 0.
pub fn parse_pagination_token(token: &str) -> Result<StreamPos> {
    token
        .strip_prefix('s')
        .and_then(|n| n.split('_').next())
        .and_then(|n| n.parse::<StreamPos>().ok())
        .ok_or_else(|| Error::invalid_param("Invalid pagination token."))
}

pub fn make_token(pos: StreamPos) -> String {
    format!("s{pos}")
}
