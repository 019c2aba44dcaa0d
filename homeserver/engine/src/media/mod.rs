//! The media repository's service: metadata, quotas, pending asynchronous
//! uploads and the blob store. Image processing and HTTP live in `media-repo`.

mod blob;
pub mod multipart;
mod purge;
mod remote;
mod s3;
pub mod staging;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use ruma::ServerName;
use tokio::sync::{RwLock, RwLockReadGuard, Semaphore, SemaphorePermit};

pub use self::{
    blob::{blob_key, Blob, BlobStore, ByteStream, FsBlobStore},
    purge::Deleted,
    remote::{disposition_file_name, fetch_timeout, RemoteDownload, RemoteMedia},
    s3::S3BlobStore,
};
use crate::{
    config::{BlobStoreKind, Media},
    core::Core,
    error::{Error, Result},
    storage::{MediaContent, MediaRecord, ThumbnailRecord},
    util::{now_ms, random_string},
};

pub struct MediaService {
    core: Arc<Core>,
    blobs: Arc<dyn BlobStore>,
    staging: PathBuf,
    remote: OnceLock<Arc<dyn RemoteMedia>>,
    in_flight: remote::InFlight,
    /// Writers of blobs (uploads, thumbnails, remote fetches) hold it shared
    /// from storing a blob until its row is in the database; blob garbage
    /// collection holds it exclusively, so it never deletes a blob that a row
    /// is about to name.
    blob_gc: RwLock<()>,
    /// One permit per core for decoding and encoding images. Image work runs
    /// on tokio's blocking pool (hundreds of threads): without this bound a
    /// burst of uploads would decode dozens of images at once, each holding
    /// its file and its pixels in memory, and slow every one of them down.
    image_jobs: Semaphore,
}

impl MediaService {
    /// Opens the configured blob store; for S3 this checks (or creates) the bucket.
    pub async fn new(core: Arc<Core>) -> anyhow::Result<Self> {
        let config = &core.config.media;
        let staging = config.path.join("tmp");
        std::fs::create_dir_all(&staging)?;
        let blobs: Arc<dyn BlobStore> = match config.store {
            BlobStoreKind::Fs => Arc::new(FsBlobStore::new(config.path.clone())?),
            BlobStoreKind::S3 => Arc::new(S3BlobStore::connect(config.s3.clone()).await?),
        };
        Ok(Self {
            core,
            blobs,
            staging,
            remote: OnceLock::new(),
            in_flight: Default::default(),
            blob_gc: RwLock::new(()),
            image_jobs: Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
        })
    }

    /// Held while a blob is stored and the row naming it is written (see
    /// `blob_gc`). Uploads take it before their first blob write.
    pub async fn store_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.blob_gc.read().await
    }

    /// Waits for a turn to process an image (see `image_jobs`); held from
    /// reading the image into memory until its results are encoded.
    pub async fn image_job(&self) -> Result<SemaphorePermit<'_>> {
        self.image_jobs
            .acquire()
            .await
            .map_err(|_| Error::unknown("The media service is shutting down."))
    }

    pub fn config(&self) -> &Media {
        &self.core.config.media
    }

    pub fn server_name(&self) -> &ServerName {
        &self.core.server_name
    }

    pub fn blobs(&self) -> &dyn BlobStore {
        &*self.blobs
    }

    /// Where uploads are streamed before they are stored (same filesystem as
    /// the fs store, so installing a blob is a rename).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Installs the federation fetcher for remote media (once, at start-up).
    pub fn set_remote(&self, remote: Arc<dyn RemoteMedia>) {
        let _ = self.remote.set(remote);
    }

    /// A fresh media id.
    pub fn new_media_id() -> String {
        random_string(24)
    }

    /// Refuses an upload of `extra` bytes that would take `user` over the quota.
    pub async fn check_quota(&self, user_id: &str, extra: u64) -> Result<()> {
        let quota = self.config().user_quota_bytes;
        if quota == 0 {
            return Ok(());
        }
        let used = self.core.storage.media.user_media_bytes(user_id).await?;
        if used.max(0) as u64 + extra > quota {
            return Err(Error::forbidden(format!(
                "Media quota exceeded: {used} of {quota} bytes used."
            )));
        }
        Ok(())
    }

    /// `POST /_matrix/media/v1/create`: reserves an id for a later upload.
    pub async fn create_pending(&self, user_id: &str) -> Result<(String, i64)> {
        let now = now_ms();
        let pending = self.core.storage.media.pending_count(user_id, now).await?;
        if pending >= i64::from(self.config().max_pending_uploads) {
            // Retry once the oldest reservation could have lapsed or been used.
            return Err(Error::limit_exceeded(1000));
        }
        let expires = now + self.config().pending_expiry_ms as i64;
        let record = MediaRecord {
            origin: self.core.server_name.to_string(),
            media_id: Self::new_media_id(),
            user_id: Some(user_id.to_owned()),
            content_type: None,
            upload_name: None,
            content: None,
            created_ts: now,
            expires_ts: Some(expires),
            remote_cache: false,
            last_access_ts: None,
        };
        if !self.core.storage.media.insert_media(&record).await? {
            return Err(Error::unknown("Media id collision."));
        }
        Ok((record.media_id, expires))
    }

    /// Records a complete upload under a new id.
    pub async fn insert_uploaded(
        &self,
        user_id: &str,
        content_type: &str,
        upload_name: Option<&str>,
        content: MediaContent,
    ) -> Result<String> {
        let record = MediaRecord {
            origin: self.core.server_name.to_string(),
            media_id: Self::new_media_id(),
            user_id: Some(user_id.to_owned()),
            content_type: Some(content_type.to_owned()),
            upload_name: upload_name.map(str::to_owned),
            content: Some(content),
            created_ts: now_ms(),
            expires_ts: None,
            remote_cache: false,
            last_access_ts: None,
        };
        if !self.core.storage.media.insert_media(&record).await? {
            return Err(Error::unknown("Media id collision."));
        }
        Ok(record.media_id)
    }

    /// Checks that `user` may upload to a reserved id: `M_NOT_FOUND` for an
    /// unknown or lapsed id, `M_FORBIDDEN` for someone else's,
    /// `M_CANNOT_OVERWRITE_MEDIA` once it is filled.
    pub async fn check_pending(&self, user_id: &str, media_id: &str) -> Result<()> {
        let origin = self.core.server_name.as_str();
        let record = self
            .core
            .storage
            .media
            .get_media(origin, media_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown media id."))?;
        if record.user_id.as_deref() != Some(user_id) {
            return Err(Error::forbidden(
                "This media id was created by another user.",
            ));
        }
        if record.content.is_some() {
            return Err(cannot_overwrite());
        }
        if record.expires_ts.is_some_and(|t| t < now_ms()) {
            return Err(Error::not_found("This media id has expired."));
        }
        Ok(())
    }

    /// Fills a reserved id; a concurrent upload that won first gives
    /// `M_CANNOT_OVERWRITE_MEDIA`.
    pub async fn fill_pending(
        &self,
        media_id: &str,
        content_type: &str,
        upload_name: Option<&str>,
        content: &MediaContent,
    ) -> Result<()> {
        let origin = self.core.server_name.as_str();
        let filled = self
            .core
            .storage
            .media
            .fill_media(origin, media_id, content_type, upload_name, content)
            .await?;
        if filled {
            Ok(())
        } else {
            Err(cannot_overwrite())
        }
    }

    /// The record of `mxc://origin/media_id`, fetching remote media through
    /// federation when a fetcher is installed. Marks it accessed.
    pub async fn get(&self, origin: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        let record = self.lookup(origin, media_id).await?;
        if let Some(r) = record.as_ref().filter(|r| r.content.is_some()) {
            self.touch(r).await?;
        }
        Ok(record)
    }

    async fn lookup(&self, origin: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        // Quarantined through the admin API: served as absent.
        if self
            .core
            .storage
            .admin
            .media_quarantined(origin.as_str(), media_id)
            .await?
        {
            return Ok(None);
        }
        if let Some(r) = self
            .core
            .storage
            .media
            .get_media(origin.as_str(), media_id)
            .await?
        {
            return Ok(Some(r));
        }
        if self.core.is_local(origin) {
            return Ok(None);
        }
        self.remote_record(origin, media_id).await
    }

    /// The uploaded record of `mxc://origin/media_id`, waiting up to `wait` for
    /// a reserved id to be filled: `M_NOT_FOUND`, or `M_NOT_YET_UPLOADED` (504)
    /// when the wait runs out.
    pub async fn get_uploaded(
        &self,
        origin: &ServerName,
        media_id: &str,
        wait: Duration,
    ) -> Result<(MediaRecord, MediaContent)> {
        let wait = wait.min(Duration::from_millis(self.config().max_download_wait_ms));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let record = self
                .get(origin, media_id)
                .await?
                .ok_or_else(|| Error::not_found("Media not found."))?;
            if let Some(content) = record.content.clone() {
                return Ok((record, content));
            }
            if record.expires_ts.is_some_and(|t| t < now_ms()) {
                return Err(Error::not_found("Media not found."));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    504,
                    "M_NOT_YET_UPLOADED",
                    "The media has not been uploaded yet.",
                ));
            }
            // Polling keeps this correct across instances sharing one database.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn thumbnails(&self, origin: &str, media_id: &str) -> Result<Vec<ThumbnailRecord>> {
        self.core.storage.media.thumbnails(origin, media_id).await
    }

    pub async fn put_thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        t: &ThumbnailRecord,
    ) -> Result<()> {
        self.core
            .storage
            .media
            .put_thumbnail(origin, media_id, t)
            .await
    }
}

fn cannot_overwrite() -> Error {
    Error::new(
        409,
        "M_CANNOT_OVERWRITE_MEDIA",
        "This media has already been uploaded.",
    )
}
