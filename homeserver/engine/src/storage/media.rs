//! Media metadata: who uploaded what, its type, size and content hash, and its
//! thumbnails. The bytes themselves live in a blob store (`crate::media`).

use async_trait::async_trait;

use crate::error::Result;

/// One media item, local or a cached copy of a remote server's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRecord {
    /// The server name in the `mxc://` URI.
    pub origin: String,
    pub media_id: String,
    /// The uploader (local media only).
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    /// `None` until the content is uploaded (asynchronous upload).
    pub content: Option<MediaContent>,
    pub created_ts: i64,
    /// When an unfilled id from `/create` lapses.
    pub expires_ts: Option<i64>,
    /// A copy of another server's media fetched over federation.
    pub remote_cache: bool,
    /// When it was last downloaded or thumbnailed (to the minute).
    pub last_access_ts: Option<i64>,
}

/// What an uploaded item holds: its blob and, for images, its dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaContent {
    pub size: i64,
    /// Hex SHA-256 of the stored bytes: the blob's key.
    pub sha256: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub animated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub width: i64,
    pub height: i64,
    /// `crop` or `scale`.
    pub method: String,
    pub animated: bool,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Inserts a new item (filled or pending). False if the id is taken.
    async fn insert_media(&self, m: &MediaRecord) -> Result<bool>;
    /// Fills a pending item. False if it is already filled (or unknown).
    async fn fill_media(
        &self,
        origin: &str,
        media_id: &str,
        content_type: &str,
        upload_name: Option<&str>,
        content: &MediaContent,
    ) -> Result<bool>;
    async fn get_media(&self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>>;
    /// Total bytes of a user's uploaded media (for the quota).
    async fn user_media_bytes(&self, user_id: &str) -> Result<i64>;
    /// A user's pending (created, not yet uploaded, not expired) ids.
    async fn pending_count(&self, user_id: &str, now_ms: i64) -> Result<i64>;
    /// Records a thumbnail; an existing one with the same key is kept.
    async fn put_thumbnail(&self, origin: &str, media_id: &str, t: &ThumbnailRecord) -> Result<()>;
    async fn thumbnails(&self, origin: &str, media_id: &str) -> Result<Vec<ThumbnailRecord>>;
    /// Sets an item's `last_access_ts`.
    async fn touch_media(&self, origin: &str, media_id: &str, ts: i64) -> Result<()>;
    /// Deletes an item with its thumbnails and quarantine mark, in one
    /// transaction; the blob hashes its rows named. `None` if it did not exist.
    async fn delete_media(&self, origin: &str, media_id: &str) -> Result<Option<Vec<String>>>;
    /// Whether any media or thumbnail row still names this blob.
    async fn blob_in_use(&self, sha256: &str) -> Result<bool>;
    /// Uploaded items of `origin` (ours, not cached copies) bigger than
    /// `size_gt` bytes and neither accessed nor, when never accessed, created
    /// since `before_ts`, oldest first.
    async fn local_media_before(
        &self,
        origin: &str,
        before_ts: i64,
        size_gt: i64,
    ) -> Result<Vec<MediaRecord>>;
    /// Cached remote items last accessed before `before_ts`: `(origin, media_id)`.
    async fn remote_media_before(&self, before_ts: i64) -> Result<Vec<(String, String)>>;
    /// Every `mxc://` URI in use as an avatar: users' profiles and rooms'
    /// current `m.room.avatar`.
    async fn avatar_uris(&self) -> Result<Vec<String>>;
}
