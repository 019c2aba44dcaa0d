//! Deleting a room's events, or its history before a position.
//!
//! Deletes run in the reverse order of an append's writes: id index entries
//! first (listed from the event rows), then the event rows, then the bucket
//! index. An interrupted purge leaves only rows a rerun will find again, and
//! never an index entry pointing at nothing it could not list.

use futures::{StreamExt, TryStreamExt};

use super::{db_error, rows, CqlEventLog, EventLog};
use crate::error::Result;
use crate::storage::StreamPos;

/// Rows listed per query while collecting the ids to delete.
const ID_PAGE: i32 = 1000;
const BUCKET_PAGE: i32 = 256;
const DELETE_CONCURRENCY: usize = 32;

impl CqlEventLog {
    /// The room's non-empty buckets in `first..=last`, oldest first.
    async fn buckets(&self, room_id: &str, mut first: i64, last: i64) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        while first <= last {
            let result = self
                .session
                .execute_unpaged(&self.st.buckets_asc, (room_id, first, last, BUCKET_PAGE))
                .await
                .map_err(db_error)?;
            let page: Vec<(i64,)> = rows(result)?;
            let full = page.len() >= BUCKET_PAGE as usize;
            out.extend(page.iter().map(|(b,)| *b));
            match page.last() {
                Some((b,)) if full => first = b + 1,
                _ => break,
            }
        }
        Ok(out)
    }

    /// Deletes the id index entries of a bucket's events with `pos < before`;
    /// returns how many events that is.
    async fn delete_ids(&self, room_id: &str, bucket: i64, before: StreamPos) -> Result<u64> {
        let mut from = StreamPos::MIN;
        let mut count = 0;
        loop {
            let result = self
                .session
                .execute_unpaged(
                    &self.st.ids_in_range,
                    (room_id, bucket, from, before, ID_PAGE),
                )
                .await
                .map_err(db_error)?;
            let page: Vec<(i64, Option<String>)> = rows(result)?;
            let ids: Vec<&str> = page.iter().filter_map(|(_, id)| id.as_deref()).collect();
            count += ids.len() as u64;
            let deletes: Vec<_> = ids
                .into_iter()
                .map(|id| self.session.execute_unpaged(&self.st.delete_by_id, (id,)))
                .collect();
            futures::stream::iter(deletes)
                .buffer_unordered(DELETE_CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await
                .map_err(db_error)?;
            match page.last() {
                Some((pos, _)) if page.len() >= ID_PAGE as usize => from = pos + 1,
                _ => return Ok(count),
            }
        }
    }

    /// Deletes every event of one bucket, and the bucket's index entry.
    async fn delete_bucket(&self, room_id: &str, bucket: i64) -> Result<u64> {
        let count = self.delete_ids(room_id, bucket, StreamPos::MAX).await?;
        self.session
            .execute_unpaged(&self.st.delete_bucket_rows, (room_id, bucket))
            .await
            .map_err(db_error)?;
        self.session
            .execute_unpaged(&self.st.delete_bucket_index, (room_id, bucket))
            .await
            .map_err(db_error)?;
        Ok(count)
    }
}

pub(super) async fn delete_room(log: &CqlEventLog, room_id: &str) -> Result<u64> {
    let max = log.room_max_pos(room_id).await?;
    let mut count = 0;
    for bucket in log.buckets(room_id, i64::MIN, i64::MAX).await? {
        count += log.delete_bucket(room_id, bucket).await?;
    }
    log.session
        .execute_unpaged(&log.st.delete_room_index, (room_id,))
        .await
        .map_err(db_error)?;
    // A deletion at the published maximum's own timestamp hides it, while a
    // later append at a higher position publishes again.
    if max > 0 {
        log.session
            .execute_unpaged(&log.st.delete_max_pos, (max, room_id))
            .await
            .map_err(db_error)?;
    }
    Ok(count)
}

pub(super) async fn purge_before(
    log: &CqlEventLog,
    room_id: &str,
    before: StreamPos,
) -> Result<u64> {
    if before == StreamPos::MIN {
        return Ok(0);
    }
    let edge = log.bucket(before);
    let mut count = 0;
    for bucket in log
        .buckets(room_id, i64::MIN, log.bucket(before - 1))
        .await?
    {
        if bucket < edge {
            count += log.delete_bucket(room_id, bucket).await?;
        } else {
            // The bucket `before` falls in keeps its later events.
            count += log.delete_ids(room_id, bucket, before).await?;
            log.session
                .execute_unpaged(&log.st.delete_range, (room_id, bucket, before))
                .await
                .map_err(db_error)?;
        }
    }
    Ok(count)
}
