//! Fetching the rows of known events: the read half of the SQL-indexed
//! timeline (`split.rs`), where the SQL store says which events a page holds
//! and the log supplies their PDUs.
//!
//! A page of a room's timeline is a contiguous run of its positions, so the
//! rows it needs sit in one slice of each bucket it touches: one range read
//! per bucket, not one point read per event. Rows in that slice that were
//! not asked for (left by an append whose SQL commit failed) are dropped. A
//! key the slice did not return (the slice was cut at its limit) is fetched
//! by a point read.

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use super::{CqlEventLog, LogEvent};
use crate::error::Result;
use crate::storage::{Direction, StreamPos};

/// Bucket slices (or point reads) in flight at once for one call.
const READ_CONCURRENCY: usize = 16;

/// Rows read from a slice beyond the number asked for, to absorb the few
/// unasked rows a slice may hold before falling back to point reads.
const SLACK: usize = 16;

pub(super) async fn events_at(
    log: &CqlEventLog,
    room_id: &str,
    keys: &[(StreamPos, String)],
) -> Result<Vec<LogEvent>> {
    let wanted: HashSet<(StreamPos, &str)> = keys.iter().map(|(p, id)| (*p, id.as_str())).collect();
    let mut by_bucket: BTreeMap<i64, (StreamPos, StreamPos, usize)> = BTreeMap::new();
    for (pos, _) in keys {
        let span = by_bucket.entry(log.bucket(*pos)).or_insert((*pos, *pos, 0));
        span.0 = span.0.min(*pos);
        span.1 = span.1.max(*pos);
        span.2 += 1;
    }
    let slices: Vec<_> = by_bucket
        .into_iter()
        .map(|(bucket, (lo, hi, n))| async move {
            let mut out = Vec::new();
            log.read_bucket(
                room_id,
                bucket,
                (lo, hi),
                Direction::Forward,
                n + SLACK,
                &mut out,
            )
            .await?;
            Ok::<_, crate::error::Error>(out)
        })
        .collect();
    let pages: Vec<Vec<LogEvent>> = futures::stream::iter(slices)
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let mut found: Vec<LogEvent> = pages
        .into_iter()
        .flatten()
        .filter(|ev| wanted.contains(&(ev.stream_pos, ev.event_id.as_str())))
        .collect();
    let got: HashSet<(StreamPos, &str)> = found
        .iter()
        .map(|ev| (ev.stream_pos, ev.event_id.as_str()))
        .collect();
    let missing: Vec<(StreamPos, &str)> = wanted.difference(&got).copied().collect();
    if missing.is_empty() {
        return Ok(found);
    }
    let points: Vec<_> = missing
        .into_iter()
        .map(|(pos, id)| log.event_at(room_id, pos, id))
        .collect();
    let extra: Vec<Option<LogEvent>> = futures::stream::iter(points)
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    found.extend(extra.into_iter().flatten());
    Ok(found)
}
