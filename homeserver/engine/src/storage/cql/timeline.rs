//! Appends, point reads, range reads and redaction of the event log.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::DeserializeRow;

use super::statements::Statements;
use super::{db_error, rows, CqlEventLog, EventLog, LogEvent};
use crate::error::{Error, Result};
use crate::storage::{Direction, StreamPos};

/// Events written at once by one `append`: enough to hide round trips,
/// few enough not to flood the coordinator.
const WRITE_CONCURRENCY: usize = 32;

/// Buckets listed per query while walking a range.
const BUCKET_PAGE: i32 = 64;

/// An `events` row as read. Every column but the key is optional: a row
/// whose event was purged while a redaction raced it has only some columns,
/// and is skipped.
#[derive(DeserializeRow)]
struct EventRow {
    stream_pos: i64,
    event_id: Option<String>,
    event_type: Option<String>,
    state_key: Option<String>,
    sender: Option<String>,
    origin_server_ts: Option<i64>,
    depth: Option<i64>,
    pdu_json: Option<String>,
    redacted_pdu_json: Option<String>,
    state_before: Option<i64>,
    rejected: Option<bool>,
    txn_device: Option<String>,
    txn_id: Option<String>,
}

impl EventRow {
    fn into_event(self, room_id: &str) -> Option<LogEvent> {
        let redacted = self.redacted_pdu_json.is_some();
        Some(LogEvent {
            stream_pos: self.stream_pos,
            event_id: self.event_id?,
            room_id: room_id.to_owned(),
            event_type: self.event_type?,
            state_key: self.state_key,
            sender: self.sender?,
            origin_server_ts: self.origin_server_ts.unwrap_or(0),
            depth: self.depth.unwrap_or(0),
            pdu_json: self.redacted_pdu_json.or(self.pdu_json)?,
            state_before: self.state_before.unwrap_or(0),
            rejected: self.rejected.unwrap_or(false),
            txn: self.txn_device.zip(self.txn_id),
            redacted,
        })
    }
}

/// CQL `LIMIT` takes an int; larger requests are served in several pages.
fn page_limit(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl CqlEventLog {
    /// Phase one of an append: the event row, its id index entry and its
    /// bucket's index entry. Nothing reads them as part of the timeline until
    /// the room's max position moves past them.
    async fn write_rows(&self, ev: &LogEvent) -> Result<()> {
        let st = &self.st;
        let bucket = self.bucket(ev.stream_pos);
        let (txn_device, txn_id) = match &ev.txn {
            Some((d, t)) => (Some(d.as_str()), Some(t.as_str())),
            None => (None, None),
        };
        let row = self.session.execute_unpaged(
            &st.insert_event,
            (
                ev.room_id.as_str(),
                bucket,
                ev.stream_pos,
                ev.event_id.as_str(),
                ev.event_type.as_str(),
                ev.state_key.as_deref(),
                ev.sender.as_str(),
                ev.origin_server_ts,
                ev.depth,
                ev.pdu_json.as_str(),
                ev.state_before,
                ev.rejected,
                txn_device,
                txn_id,
            ),
        );
        let by_id = self.session.execute_unpaged(
            &st.insert_by_id,
            (ev.event_id.as_str(), ev.room_id.as_str(), ev.stream_pos),
        );
        let index = self
            .session
            .execute_unpaged(&st.insert_bucket, (ev.room_id.as_str(), bucket));
        futures::try_join!(row, by_id, index).map_err(db_error)?;
        Ok(())
    }

    /// The row at exactly `(room_id, pos, event_id)`.
    pub(super) async fn event_at(
        &self,
        room_id: &str,
        pos: StreamPos,
        event_id: &str,
    ) -> Result<Option<LogEvent>> {
        let result = self
            .session
            .execute_unpaged(
                &self.st.get_event,
                (room_id, self.bucket(pos), pos, event_id),
            )
            .await
            .map_err(db_error)?;
        Ok(rows::<EventRow>(result)?
            .into_iter()
            .next()
            .and_then(|r| r.into_event(room_id)))
    }

    /// Reads one bucket's slice `lo..=hi` in `dir` order into `out`, up to
    /// `limit` events in total, paging by position.
    pub(super) async fn read_bucket(
        &self,
        room_id: &str,
        bucket: i64,
        (mut lo, mut hi): (StreamPos, StreamPos),
        dir: Direction,
        limit: usize,
        out: &mut Vec<LogEvent>,
    ) -> Result<()> {
        let st: &Statements = &self.st;
        let stmt = match dir {
            Direction::Forward => &st.range_asc,
            Direction::Backward => &st.range_desc,
        };
        while out.len() < limit && lo <= hi {
            let want = page_limit(limit - out.len());
            let result = self
                .session
                .execute_unpaged(stmt, (room_id, bucket, lo, hi, want))
                .await
                .map_err(db_error)?;
            let page: Vec<EventRow> = rows(result)?;
            let full = page.len() >= want as usize;
            let Some(last) = page.last().map(|r| r.stream_pos) else {
                break;
            };
            out.extend(page.into_iter().filter_map(|r| r.into_event(room_id)));
            if !full {
                break;
            }
            // Skipped partial rows left room in the page: resume after it.
            match dir {
                Direction::Forward => lo = last + 1,
                Direction::Backward => hi = last - 1,
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventLog for CqlEventLog {
    async fn append(&self, events: &[LogEvent]) -> Result<()> {
        // Positions double as write timestamps of `room_max_pos`, which must
        // be positive; the server allocates them from 1 anyway.
        if let Some(ev) = events.iter().find(|ev| ev.stream_pos < 1) {
            return Err(Error::unknown(format!(
                "stream position {} of {} is not positive",
                ev.stream_pos, ev.event_id
            )));
        }
        // Futures collected first: a stream over a borrowing closure is not
        // provably `Send` inside `async_trait`.
        let writes: Vec<_> = events.iter().map(|ev| self.write_rows(ev)).collect();
        futures::stream::iter(writes)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        // Phase two: publish each room's new maximum, only once every row
        // below it is written. The position is also the write timestamp, so
        // concurrent appends to a room keep the highest.
        let mut max: HashMap<&str, StreamPos> = HashMap::new();
        for ev in events {
            let m = max.entry(ev.room_id.as_str()).or_insert(ev.stream_pos);
            *m = (*m).max(ev.stream_pos);
        }
        let publish: Vec<_> = max
            .into_iter()
            .map(|(room_id, pos)| {
                self.session
                    .execute_unpaged(&self.st.publish_max_pos, (pos, pos, room_id))
            })
            .collect();
        futures::stream::iter(publish)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn get_event(&self, event_id: &str) -> Result<Option<LogEvent>> {
        let result = self
            .session
            .execute_unpaged(&self.st.get_by_id, (event_id,))
            .await
            .map_err(db_error)?;
        let Some((room_id, pos)) = rows::<(String, i64)>(result)?.into_iter().next() else {
            return Ok(None);
        };
        self.event_at(&room_id, pos, event_id).await
    }

    async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        to: StreamPos,
        dir: Direction,
        limit: usize,
    ) -> Result<Vec<LogEvent>> {
        // Both directions read the closed range lo..=hi.
        let (lo, hi) = match dir {
            Direction::Forward => (from.saturating_add(1), to),
            Direction::Backward => (to.saturating_add(1), from),
        };
        let mut out = Vec::new();
        if lo > hi || limit == 0 {
            return Ok(out);
        }
        let stmt = match dir {
            Direction::Forward => &self.st.buckets_asc,
            Direction::Backward => &self.st.buckets_desc,
        };
        // Walk the room's non-empty buckets in order, a page at a time.
        let (mut first, mut last) = (self.bucket(lo), self.bucket(hi));
        while out.len() < limit && first <= last {
            let result = self
                .session
                .execute_unpaged(stmt, (room_id, first, last, BUCKET_PAGE))
                .await
                .map_err(db_error)?;
            let buckets: Vec<(i64,)> = rows(result)?;
            let Some(&(edge,)) = buckets.last() else {
                break;
            };
            for (bucket,) in &buckets {
                self.read_bucket(room_id, *bucket, (lo, hi), dir, limit, &mut out)
                    .await?;
                if out.len() >= limit {
                    break;
                }
            }
            if buckets.len() < BUCKET_PAGE as usize {
                break;
            }
            match dir {
                Direction::Forward => first = edge + 1,
                Direction::Backward => last = edge - 1,
            }
        }
        Ok(out)
    }

    async fn room_max_pos(&self, room_id: &str) -> Result<StreamPos> {
        let result = self
            .session
            .execute_unpaged(&self.st.get_max_pos, (room_id,))
            .await
            .map_err(db_error)?;
        let row = rows::<(Option<i64>,)>(result)?.into_iter().next();
        Ok(row.and_then(|(m,)| m).unwrap_or(0))
    }

    async fn redact(&self, event_id: &str, redacted_pdu_json: &str) -> Result<bool> {
        let Some(ev) = self.get_event(event_id).await? else {
            return Ok(false);
        };
        self.redact_at(&ev.room_id, ev.stream_pos, event_id, redacted_pdu_json)
            .await?;
        Ok(true)
    }

    async fn events_at(
        &self,
        room_id: &str,
        keys: &[(StreamPos, String)],
    ) -> Result<Vec<LogEvent>> {
        super::bodies::events_at(self, room_id, keys).await
    }

    async fn redact_at(
        &self,
        room_id: &str,
        pos: StreamPos,
        event_id: &str,
        redacted_pdu_json: &str,
    ) -> Result<()> {
        self.session
            .execute_unpaged(
                &self.st.redact,
                (redacted_pdu_json, room_id, self.bucket(pos), pos, event_id),
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn delete_room(&self, room_id: &str) -> Result<u64> {
        super::purge::delete_room(self, room_id).await
    }

    async fn purge_before(&self, room_id: &str, before: StreamPos) -> Result<u64> {
        super::purge::purge_before(self, room_id, before).await
    }
}
