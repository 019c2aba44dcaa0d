//! `[media]`: the media repository (uploads, thumbnails, storage backend).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Media {
    /// Largest accepted upload, in bytes. Larger uploads get `M_TOO_LARGE`.
    pub max_upload_bytes: u64,
    /// Where blobs live: `"fs"` (the local filesystem under `path`) or `"s3"`.
    pub store: BlobStoreKind,
    /// Blob root for `store = "fs"`; upload staging (`<path>/tmp`) for both stores.
    pub path: PathBuf,
    pub s3: S3,
    /// Serve the deprecated unauthenticated `/_matrix/media/v3/download`,
    /// `/thumbnail` and `/config`. Off: they answer 404 `M_NOT_FOUND`.
    pub legacy_unauthenticated: bool,
    /// Bytes one user may have uploaded in total; 0 means no quota.
    pub user_quota_bytes: u64,
    /// Thumbnails made at upload time. Other sizes are made on demand and cached.
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Largest width or height of an on-demand thumbnail; larger requests are clamped.
    pub max_thumbnail_dimension: u32,
    /// Images with more pixels than this (read from the header, before decoding)
    /// are refused: the decompression-bomb guard.
    pub max_image_pixels: u64,
    /// Strip EXIF, XMP and text metadata from served originals (the EXIF
    /// orientation is applied to the pixels first).
    pub strip_metadata: bool,
    /// Re-encode still images larger than this many bytes as JPEG (0: never).
    pub reencode_above_bytes: u64,
    /// JPEG quality (1-100) for re-encoded originals and thumbnails.
    pub jpeg_quality: u8,
    /// Re-encoded originals are scaled down to fit this width and height.
    pub reencode_max_dimension: u32,
    /// How long an id from `/_matrix/media/v1/create` waits for its upload.
    pub pending_expiry_ms: u64,
    /// How many created-but-not-uploaded ids one user may hold.
    pub max_pending_uploads: u32,
    /// Longest a download of a not-yet-uploaded id waits (`timeout_ms` cap).
    pub max_download_wait_ms: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobStoreKind {
    Fs,
    S3,
}

/// An S3-compatible bucket (AWS, Ceph RGW, Garage, S3Proxy, ...), addressed
/// path-style (`<endpoint>/<bucket>/<key>`) and signed with AWS Signature V4.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3 {
    /// e.g. `https://s3.eu-central-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Prepended to every object key (e.g. `media/`).
    pub prefix: String,
    /// Create the bucket at start-up when it does not exist.
    pub create_bucket: bool,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    /// `"crop"` or `"scale"`.
    pub method: ThumbnailMethod,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

impl Default for Media {
    fn default() -> Self {
        let size = |width, height, method| ThumbnailSize {
            width,
            height,
            method,
        };
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            store: BlobStoreKind::Fs,
            path: PathBuf::from("./data/media"),
            s3: S3::default(),
            legacy_unauthenticated: false,
            user_quota_bytes: 0,
            thumbnail_sizes: vec![
                size(32, 32, ThumbnailMethod::Crop),
                size(96, 96, ThumbnailMethod::Crop),
                size(320, 240, ThumbnailMethod::Scale),
                size(640, 480, ThumbnailMethod::Scale),
                size(800, 600, ThumbnailMethod::Scale),
            ],
            max_thumbnail_dimension: 1600,
            max_image_pixels: 40_000_000,
            strip_metadata: true,
            reencode_above_bytes: 0,
            jpeg_quality: 85,
            reencode_max_dimension: 4096,
            pending_expiry_ms: 24 * 60 * 60 * 1000,
            max_pending_uploads: 10,
            max_download_wait_ms: 60_000,
        }
    }
}

impl Default for S3 {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: "media".to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            prefix: String::new(),
            create_bucket: true,
        }
    }
}

impl Media {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.store == BlobStoreKind::S3 && self.s3.endpoint.is_empty() {
            anyhow::bail!("media.store = \"s3\" needs media.s3.endpoint");
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            anyhow::bail!("media.jpeg_quality must be between 1 and 100");
        }
        if self.max_image_pixels == 0 || self.max_thumbnail_dimension == 0 {
            anyhow::bail!(
                "media.max_image_pixels and media.max_thumbnail_dimension must be positive"
            );
        }
        Ok(())
    }
}
