//! Deleting media: one local item, local items by age and size, and the
//! remote media cache by last access (the admin API's media deletion).
//!
//! Rows go first, in one transaction per item (metadata, thumbnails,
//! quarantine mark); then each blob they named is deleted unless another row
//! still names it, since identical content shares one blob. Deleting what is
//! already gone succeeds and deletes nothing, so every call is idempotent.

use std::collections::HashSet;

use ruma::ServerName;

use super::MediaService;
use crate::error::Result;

/// What a deletion removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The media ids whose records were deleted.
    pub media_ids: Vec<String>,
    /// Blobs removed from the store (media and thumbnails no row names any more).
    pub blobs: usize,
}

impl MediaService {
    /// Deletes `mxc://origin/media_id` (local or a cached copy).
    pub async fn delete(&self, origin: &ServerName, media_id: &str) -> Result<Deleted> {
        let mut deleted = Deleted::default();
        self.delete_into(origin.as_str(), media_id, &mut deleted)
            .await?;
        Ok(deleted)
    }

    async fn delete_into(&self, origin: &str, media_id: &str, out: &mut Deleted) -> Result<()> {
        let Some(hashes) = self
            .core
            .storage
            .media
            .delete_media(origin, media_id)
            .await?
        else {
            return Ok(());
        };
        out.media_ids.push(media_id.to_owned());
        out.blobs += self.delete_blobs(&hashes).await?;
        tracing::info!(%origin, %media_id, "media deleted");
        Ok(())
    }

    /// Deletes the blobs no media or thumbnail row names any more; answers how
    /// many went.
    async fn delete_blobs(&self, hashes: &[String]) -> Result<usize> {
        // Exclusive: no upload is between storing a blob and naming it.
        let _gc = self.blob_gc.write().await;
        let mut n = 0;
        for sha256 in hashes {
            if !self.core.storage.media.blob_in_use(sha256).await? {
                self.blobs.delete(sha256).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes this server's uploads bigger than `size_gt` bytes not accessed
    /// (or, never accessed, not uploaded) since `before_ts`. With
    /// `keep_profiles`, media in use as a user's or room's avatar stays.
    pub async fn delete_local_before(
        &self,
        before_ts: i64,
        size_gt: i64,
        keep_profiles: bool,
    ) -> Result<Deleted> {
        let origin = self.core.server_name.as_str();
        let candidates = self
            .core
            .storage
            .media
            .local_media_before(origin, before_ts, size_gt)
            .await?;
        let avatars: HashSet<String> = if keep_profiles {
            self.core
                .storage
                .media
                .avatar_uris()
                .await?
                .into_iter()
                .collect()
        } else {
            HashSet::new()
        };
        let mut deleted = Deleted::default();
        for m in candidates {
            if avatars.contains(&format!("mxc://{origin}/{}", m.media_id)) {
                continue;
            }
            self.delete_into(origin, &m.media_id, &mut deleted).await?;
        }
        Ok(deleted)
    }

    /// Deletes cached copies of other servers' media last accessed before
    /// `before_ts`; they are fetched again on the next request.
    pub async fn purge_remote_cache(&self, before_ts: i64) -> Result<Deleted> {
        let mut deleted = Deleted::default();
        let items = self
            .core
            .storage
            .media
            .remote_media_before(before_ts)
            .await?;
        for (origin, media_id) in items {
            self.delete_into(&origin, &media_id, &mut deleted).await?;
        }
        Ok(deleted)
    }
}
