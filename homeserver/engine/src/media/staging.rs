//! Staging: a body on its way into the blob store is streamed to a file next
//! to the store while it is hashed and counted, so a server holds one chunk per
//! transfer in memory whatever the file's size. Uploads and remote media
//! fetched over federation both arrive this way.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{blob::io_error, MediaService};
use crate::error::Error;

/// A staging file, removed on drop unless the blob store took it.
pub struct Staged {
    pub path: PathBuf,
    pub len: u64,
    /// Hex SHA-256 of the whole body: its blob key.
    pub sha256: String,
    /// The first bytes, for content sniffing.
    pub head: Vec<u8>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // The blob store moves or deletes the file; this catches failures.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why staging stopped.
#[derive(Debug)]
pub enum StageError {
    /// The body went past `max` bytes; it was cut off there.
    TooLarge,
    /// The body stream failed (the peer went away mid-transfer).
    Read(String),
    /// Writing the staging file failed.
    Storage(Error),
}

/// Streams `body` into a new file in `dir`, keeping its first `head_len` bytes.
pub async fn stage<S, E>(
    dir: &Path,
    body: S,
    max: u64,
    head_len: usize,
) -> Result<Staged, StageError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let path = dir.join(format!("stage-{}", MediaService::new_media_id()));
    let mut staged = Staged {
        path,
        len: 0,
        sha256: String::new(),
        head: Vec::with_capacity(head_len),
    };
    let storage = |what: &str, e: std::io::Error| StageError::Storage(io_error(what, e));
    let mut file = tokio::fs::File::create(&staged.path)
        .await
        .map_err(|e| storage("create staging file", e))?;
    let mut hasher = Sha256::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StageError::Read(e.to_string()))?;
        staged.len += chunk.len() as u64;
        if staged.len > max {
            return Err(StageError::TooLarge);
        }
        if staged.head.len() < head_len {
            let take = (head_len - staged.head.len()).min(chunk.len());
            staged.head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| storage("write staging file", e))?;
    }
    file.flush()
        .await
        .map_err(|e| storage("flush staging file", e))?;
    staged.sha256 = hex::encode(hasher.finalize());
    Ok(staged)
}
