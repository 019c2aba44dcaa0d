//! Federation destinations: the servers we send to, their health (last
//! success and failure, backoff) and queue, and resetting a backoff so the
//! next send is attempted at once.
//!
//! Reads and writes the destination table of the federation sender
//! (`storage::federation`); the sender reads `retry_at` before each attempt.

use serde_json::{json, Value};

use super::{users::parse_dir, users::parse_page, AdminService};
use crate::{
    error::{Error, Result},
    storage::federation::DestinationRecord,
};

impl AdminService {
    async fn destination_json(&self, d: &DestinationRecord) -> Result<Value> {
        let queued = self
            .core
            .storage
            .federation
            .outbox_len(&d.destination)
            .await?;
        Ok(json!({
            "destination": d.destination,
            "retry_last_ts": d.last_failure_ts.unwrap_or(0),
            "retry_interval": d.backoff_ms,
            "failure_ts": d.last_failure_ts,
            "last_successful_stream_ordering": null,
            "last_success_ts": d.last_success_ts,
            "last_error": d.last_error,
            "retry_at": d.retry_at,
            "queued": queued,
        }))
    }

    /// `GET /_synapse/admin/v1/federation/destinations`: every destination
    /// we have sent to or queued for, with its status. Sorted by name
    /// (`order_by` accepts `destination`, `retry_interval`, `failure_ts`).
    pub async fn list_destinations(
        &self,
        from: Option<&str>,
        limit: Option<i64>,
        order_by: Option<&str>,
        dir: Option<&str>,
        search: Option<&str>,
    ) -> Result<Value> {
        let (from, limit) = parse_page(from, limit)?;
        let backwards = parse_dir(dir)?;
        let federation = &self.core.storage.federation;
        let mut known = federation.list_destinations().await?;
        // Destinations with queued traffic but no status row yet.
        for name in federation.outbox_destinations().await? {
            if !known.iter().any(|d| d.destination == name) {
                known.push(DestinationRecord {
                    destination: name,
                    ..Default::default()
                });
            }
        }
        if let Some(term) = search.filter(|s| !s.is_empty()) {
            known.retain(|d| d.destination.contains(term));
        }
        match order_by.unwrap_or("destination") {
            "destination" => known.sort_by(|a, b| a.destination.cmp(&b.destination)),
            "retry_interval" => known.sort_by_key(|d| (d.backoff_ms, d.destination.clone())),
            "failure_ts" => known.sort_by_key(|d| (d.last_failure_ts, d.destination.clone())),
            other => {
                return Err(Error::invalid_param(format!(
                    "Unknown value for order_by: {other}"
                )))
            }
        }
        if backwards {
            known.reverse();
        }
        let total = known.len() as i64;
        let mut page = Vec::new();
        for d in known.iter().skip(from as usize).take(limit as usize) {
            page.push(self.destination_json(d).await?);
        }
        let mut out = json!({"destinations": page, "total": total});
        let next = from + page.len() as i64;
        if next < total && !page.is_empty() {
            out["next_token"] = json!(next.to_string());
        }
        Ok(out)
    }

    /// `GET /_synapse/admin/v1/federation/destinations/{destination}`.
    pub async fn destination(&self, destination: &str) -> Result<Value> {
        let d = self.known_destination(destination).await?;
        self.destination_json(&d).await
    }

    async fn known_destination(&self, destination: &str) -> Result<DestinationRecord> {
        ruma::ServerName::parse(destination)
            .map_err(|_| Error::invalid_param(format!("Invalid server name: {destination}")))?;
        let federation = &self.core.storage.federation;
        if let Some(d) = federation.get_destination(destination).await? {
            return Ok(d);
        }
        if federation.outbox_len(destination).await? > 0 {
            return Ok(DestinationRecord {
                destination: destination.to_owned(),
                ..Default::default()
            });
        }
        Err(Error::not_found("Unknown destination."))
    }

    /// `POST .../destinations/{destination}/reset_connection`: clears the
    /// backoff so the next send goes out at once. Idempotent.
    pub async fn reset_destination(&self, destination: &str) -> Result<Value> {
        let mut d = self.known_destination(destination).await?;
        d.retry_at = 0;
        d.backoff_ms = 0;
        self.core.storage.federation.put_destination(&d).await?;
        Ok(json!({}))
    }
}
