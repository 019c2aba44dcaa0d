//! The federation store of the split timeline: remote timeline messages put
//! their bodies in the event log like local ones; everything else (outliers,
//! backfilled history, invites, the outbound queue) is the SQL store's.

use async_trait::async_trait;

use super::{body_in_log, SplitTimeline};
use crate::error::Result;
use crate::storage::cql::LogEvent;
use crate::storage::federation::{
    DestinationRecord, FederationStore, OutboxRow, OutlierWrite, RemoteEventWrite,
    RemoteInviteRecord, SnapshotWrite,
};
use crate::storage::{StoredEvent, StreamPos};

#[async_trait]
impl FederationStore for SplitTimeline {
    async fn persist_remote_event(&self, ev: &RemoteEventWrite) -> Result<()> {
        let target = self.log_target(ev.redaction.as_ref(), &ev.room_id).await?;
        if body_in_log(
            ev.state_key.as_deref(),
            ev.rejected,
            ev.outlier,
            ev.stream_pos,
        ) {
            // As for local sends: the body first, then the SQL commit.
            self.log.append(&[log_event(ev)]).await?;
            let index = RemoteEventWrite {
                pdu_json: String::new(),
                ..ev.clone()
            };
            self.sql_federation.persist_remote_event(&index).await?;
        } else {
            self.sql_federation.persist_remote_event(ev).await?;
        }
        self.erase_in_log(&ev.room_id, target).await;
        Ok(())
    }

    async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>> {
        let mut events = self.sql_federation.get_events(event_ids).await?;
        self.fill(&mut events).await?;
        Ok(events)
    }

    async fn store_outliers(&self, events: &[OutlierWrite]) -> Result<()> {
        self.sql_federation.store_outliers(events).await
    }

    async fn store_backfilled(&self, events: &[OutlierWrite]) -> Result<usize> {
        self.sql_federation.store_backfilled(events).await
    }

    async fn event_is_outlier(&self, event_id: &str) -> Result<Option<bool>> {
        self.sql_federation.event_is_outlier(event_id).await
    }

    async fn state_after_snapshot(&self, event_id: &str) -> Result<Option<i64>> {
        self.sql_federation.state_after_snapshot(event_id).await
    }

    async fn record_state_after(&self, event_id: &str, snapshot_id: i64) -> Result<()> {
        self.sql_federation
            .record_state_after(event_id, snapshot_id)
            .await
    }

    async fn create_snapshot(&self, snapshot: &SnapshotWrite) -> Result<()> {
        self.sql_federation.create_snapshot(snapshot).await
    }

    async fn put_remote_invite(
        &self,
        invite: &RemoteInviteRecord,
        membership: &str,
        pos: StreamPos,
    ) -> Result<()> {
        self.sql_federation
            .put_remote_invite(invite, membership, pos)
            .await
    }

    async fn get_remote_invite(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<RemoteInviteRecord>> {
        self.sql_federation
            .get_remote_invite(room_id, user_id)
            .await
    }

    async fn delete_remote_invite(&self, room_id: &str, user_id: &str) -> Result<()> {
        self.sql_federation
            .delete_remote_invite(room_id, user_id)
            .await
    }

    async fn set_membership_row(
        &self,
        room_id: &str,
        user_id: &str,
        membership: &str,
        event_id: &str,
        pos: StreamPos,
    ) -> Result<()> {
        self.sql_federation
            .set_membership_row(room_id, user_id, membership, event_id, pos)
            .await
    }

    async fn outbox_push(&self, rows: &[OutboxRow]) -> Result<()> {
        self.sql_federation.outbox_push(rows).await
    }

    async fn outbox_peek(&self, destination: &str, limit: usize) -> Result<Vec<OutboxRow>> {
        self.sql_federation.outbox_peek(destination, limit).await
    }

    async fn outbox_delete(&self, destination: &str, ids: &[i64]) -> Result<()> {
        self.sql_federation.outbox_delete(destination, ids).await
    }

    async fn outbox_destinations(&self) -> Result<Vec<String>> {
        self.sql_federation.outbox_destinations().await
    }

    async fn outbox_max_id(&self) -> Result<i64> {
        self.sql_federation.outbox_max_id().await
    }

    async fn outbox_len(&self, destination: &str) -> Result<i64> {
        self.sql_federation.outbox_len(destination).await
    }

    async fn get_destination(&self, destination: &str) -> Result<Option<DestinationRecord>> {
        self.sql_federation.get_destination(destination).await
    }

    async fn put_destination(&self, record: &DestinationRecord) -> Result<()> {
        self.sql_federation.put_destination(record).await
    }

    async fn list_destinations(&self) -> Result<Vec<DestinationRecord>> {
        self.sql_federation.list_destinations().await
    }

    async fn inbound_txn(&self, origin: &str, txn_id: &str) -> Result<Option<String>> {
        self.sql_federation.inbound_txn(origin, txn_id).await
    }

    async fn put_inbound_txn(&self, origin: &str, txn_id: &str, response: &str) -> Result<()> {
        self.sql_federation
            .put_inbound_txn(origin, txn_id, response)
            .await
    }
}

fn log_event(ev: &RemoteEventWrite) -> LogEvent {
    LogEvent {
        stream_pos: ev.stream_pos,
        event_id: ev.event_id.clone(),
        room_id: ev.room_id.clone(),
        event_type: ev.event_type.clone(),
        state_key: ev.state_key.clone(),
        sender: ev.sender.clone(),
        origin_server_ts: ev.origin_server_ts,
        depth: ev.depth,
        pdu_json: ev.pdu_json.clone(),
        state_before: ev.state_before,
        rejected: ev.rejected,
        txn: None,
        redacted: false,
    }
}
