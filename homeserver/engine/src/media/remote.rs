//! The remote media cache: `mxc://<other server>/<id>` is fetched from its
//! origin on first request, stored in the blob store like an upload, recorded
//! with `remote_cache = 1`, and served from the cache afterwards (its
//! `last_access_ts` kept up to date for `purge_media_cache`).
//!
//! How the bytes travel (the federation content repository, its legacy
//! fallback) is the [`RemoteMedia`] fetcher's business; this module only
//! caches. One fetch per item runs at a time on an instance: concurrent
//! requests for the same item wait for it and read the cached copy.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use parking_lot::Mutex;
use ruma::ServerName;

use super::{
    blob::ByteStream,
    staging::{stage, StageError},
    MediaService,
};
use crate::{
    error::{Error, Result},
    storage::{MediaContent, MediaRecord},
    util::now_ms,
};

/// A remote item on its way here.
pub struct RemoteDownload {
    /// The origin's `Content-Type` for the media.
    pub content_type: Option<String>,
    /// The file name from the origin's `Content-Disposition`.
    pub file_name: Option<String>,
    pub body: ByteStream,
}

/// Fetches another server's media (federation). Until one is installed with
/// [`MediaService::set_remote`], remote media is not found.
#[async_trait]
pub trait RemoteMedia: Send + Sync {
    /// Starts downloading `mxc://origin/media_id`; `None` when the origin has
    /// no such media. Errors carry the status a client should see: 502 for an
    /// unreachable origin or a broken answer, 504 for one that timed out.
    async fn download(&self, origin: &ServerName, media_id: &str)
        -> Result<Option<RemoteDownload>>;
}

/// One lock per item being fetched, so each is fetched once at a time.
#[derive(Default)]
pub(super) struct InFlight(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A claim on one item's lock; dropping it (also when the request is
/// cancelled mid-fetch) forgets the lock once nobody else waits for it.
struct Claim<'a> {
    map: &'a InFlight,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl InFlight {
    fn claim(&self, key: String) -> Claim<'_> {
        let lock = self.0.lock().entry(key.clone()).or_default().clone();
        Claim {
            map: self,
            key,
            lock,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut map = self.map.0.lock();
        // Held by the map and this claim only: nobody else is waiting.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

/// How often a cached item's `last_access_ts` is written at most: the purge
/// works in days, so a minute of imprecision saves a write per download.
const TOUCH_EVERY_MS: i64 = 60_000;

impl MediaService {
    /// The cached copy of remote media, fetching it first if need be.
    pub(super) async fn remote_record(
        &self,
        origin: &ServerName,
        media_id: &str,
    ) -> Result<Option<MediaRecord>> {
        let Some(remote) = self.remote.get() else {
            return Ok(None);
        };
        let claim = self.in_flight.claim(format!("{origin}/{media_id}"));
        let _fetching = claim.lock.lock().await;
        // Someone else may have fetched it while we waited.
        if let Some(r) = self
            .core
            .storage
            .media
            .get_media(origin.as_str(), media_id)
            .await?
        {
            return Ok(Some(r));
        }
        self.fetch(remote.as_ref(), origin, media_id).await
    }

    async fn fetch(
        &self,
        remote: &dyn RemoteMedia,
        origin: &ServerName,
        media_id: &str,
    ) -> Result<Option<MediaRecord>> {
        let Some(download) = remote.download(origin, media_id).await? else {
            return Ok(None);
        };
        let max = self.config().max_upload_bytes;
        let staged = stage(self.staging_dir(), download.body, max, 0)
            .await
            .map_err(|e| match e {
                StageError::TooLarge => Error::new(
                    502,
                    "M_TOO_LARGE",
                    format!("The remote media is larger than this server's limit of {max} bytes."),
                ),
                StageError::Read(reason) => {
                    tracing::info!(%origin, %media_id, %reason, "remote media transfer broke off");
                    Error::new(
                        502,
                        "M_UNKNOWN",
                        format!("Fetching the media from {origin} failed."),
                    )
                }
                StageError::Storage(e) => e,
            })?;
        let now = now_ms();
        let record = MediaRecord {
            origin: origin.to_string(),
            media_id: media_id.to_owned(),
            user_id: None,
            content_type: Some(
                download
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
            ),
            upload_name: download.file_name,
            content: Some(MediaContent {
                size: staged.len as i64,
                sha256: staged.sha256.clone(),
                width: None,
                height: None,
                animated: false,
            }),
            created_ts: now,
            expires_ts: None,
            remote_cache: true,
            last_access_ts: Some(now),
        };
        {
            let _storing = self.store_guard().await;
            self.blobs
                .put_file(&staged.sha256, &staged.path, staged.len)
                .await?;
            self.core.storage.media.insert_media(&record).await?;
        }
        tracing::debug!(%origin, %media_id, bytes = staged.len, "cached remote media");
        Ok(Some(record))
    }

    /// Records that an item was served, at most once a minute.
    pub(super) async fn touch(&self, record: &MediaRecord) -> Result<()> {
        let now = now_ms();
        if record
            .last_access_ts
            .is_some_and(|t| now - t < TOUCH_EVERY_MS)
        {
            return Ok(());
        }
        self.core
            .storage
            .media
            .touch_media(&record.origin, &record.media_id, now)
            .await
    }
}

/// How long a remote fetch may take, headers and body together.
pub fn fetch_timeout(request_timeout_ms: u64) -> Duration {
    // Media is larger than the JSON the federation timeout is sized for.
    Duration::from_millis(request_timeout_ms.saturating_mul(5))
}

/// The file name in a `Content-Disposition` header: RFC 6266's `filename*`
/// (UTF-8, percent-encoded) when present, else the plain `filename`.
pub fn disposition_file_name(value: &str) -> Option<String> {
    let params = || value.split(';').skip(1).filter_map(|p| p.split_once('='));
    let extended = params().find_map(|(k, v)| {
        let v = v.trim();
        k.trim().eq_ignore_ascii_case("filename*").then(|| {
            let (charset, rest) = v.split_once('\'')?;
            let (_, encoded) = rest.split_once('\'')?;
            charset
                .eq_ignore_ascii_case("utf-8")
                .then(|| percent_decode(encoded))?
        })?
    });
    extended
        .or_else(|| {
            params().find_map(|(k, v)| {
                k.trim()
                    .eq_ignore_ascii_case("filename")
                    .then(|| v.trim().trim_matches('"').to_owned())
            })
        })
        .filter(|n| !n.is_empty())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::disposition_file_name as name;

    #[test]
    fn file_names_from_dispositions() {
        assert_eq!(name("inline"), None);
        assert_eq!(
            name("inline; filename=\"cat.png\"").as_deref(),
            Some("cat.png")
        );
        assert_eq!(
            name("attachment; filename=\"r_sum_.pdf\"; filename*=utf-8''r%C3%A9sum%C3%A9.pdf")
                .as_deref(),
            Some("résumé.pdf")
        );
        assert_eq!(
            name("inline; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
    }
}
