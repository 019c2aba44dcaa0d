//! Blob storage: the bytes of media and thumbnails, keyed by their SHA-256.
//!
//! Keys are content addresses sharded two levels deep (`ab/cd/abcd…`), so a
//! directory or a bucket prefix never holds more than a few thousand entries per
//! level and identical content is stored once. A key always names the same
//! bytes, which makes writes idempotent and lets concurrent uploads of the
//! same content race harmlessly. Blobs are deleted only by the media service's
//! garbage collection, once no media or thumbnail row names them
//! (`MediaService::delete_blobs`).

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};

pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A blob being read: its length and its bytes as a stream.
pub struct Blob {
    pub len: u64,
    pub body: ByteStream,
}

/// The sharded key of the blob whose hex SHA-256 is `sha256`.
pub fn blob_key(sha256: &str) -> String {
    let a = sha256.get(0..2).unwrap_or("00");
    let b = sha256.get(2..4).unwrap_or("00");
    format!("{a}/{b}/{sha256}")
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores a finished staging file whose hex SHA-256 is `sha256`. The file is
    /// consumed (moved or deleted).
    async fn put_file(&self, sha256: &str, file: &Path, len: u64) -> Result<()>;
    /// Stores small content (thumbnails, re-encoded images) already in memory.
    async fn put_bytes(&self, sha256: &str, bytes: Bytes) -> Result<()>;
    /// Opens a blob for reading; `None` when it does not exist.
    async fn get(&self, sha256: &str) -> Result<Option<Blob>>;
    /// Removes a blob. Removing one that does not exist succeeds (idempotent).
    async fn delete(&self, sha256: &str) -> Result<()>;
}

pub(crate) fn io_error(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "media store: {what}");
    Error::unknown("Media storage failed.")
}

/// Reads a file as a stream of 64 KiB chunks.
pub(crate) fn file_stream(file: tokio::fs::File) -> ByteStream {
    Box::pin(futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    }))
}

/// Blobs as files under a root directory.
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    pub fn new(root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, sha256: &str) -> Result<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::unknown("Invalid blob key."));
        }
        Ok(self.root.join(blob_key(sha256)))
    }

    /// Moves `from` into place at `to` unless the blob is already there.
    async fn install(&self, from: &Path, to: &Path) -> Result<()> {
        if tokio::fs::try_exists(to).await.unwrap_or(false) {
            let _ = tokio::fs::remove_file(from).await;
            return Ok(());
        }
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error("mkdir", e))?;
        }
        // A rename is atomic: readers see the whole blob or none.
        tokio::fs::rename(from, to)
            .await
            .map_err(|e| io_error("rename", e))
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put_file(&self, sha256: &str, file: &Path, _len: u64) -> Result<()> {
        let to = self.path(sha256)?;
        self.install(file, &to).await
    }

    async fn put_bytes(&self, sha256: &str, bytes: Bytes) -> Result<()> {
        let to = self.path(sha256)?;
        if tokio::fs::try_exists(&to).await.unwrap_or(false) {
            return Ok(());
        }
        let dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error("mkdir", e))?;
        let tmp = dir.join(format!("{sha256}.{}", crate::util::random_string(8)));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(|e| io_error("write", e))?;
        self.install(&tmp, &to).await
    }

    async fn get(&self, sha256: &str) -> Result<Option<Blob>> {
        let path = self.path(sha256)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", e)),
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| io_error("stat", e))?
            .len();
        Ok(Some(Blob {
            len,
            body: file_stream(file),
        }))
    }

    async fn delete(&self, sha256: &str) -> Result<()> {
        let path = self.path(sha256)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("delete", e)),
        }
        // Empty shard directories are left alone: another upload may be about
        // to use them, and they cost an inode each at most.
        Ok(())
    }
}
