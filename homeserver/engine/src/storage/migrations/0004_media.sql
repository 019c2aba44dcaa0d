-- Media metadata. The bytes live in the blob store (filesystem or S3), keyed by
-- their SHA-256, so identical uploads share one blob.
-- `size` and `sha256` are NULL while an id from /create waits for its upload.
-- `remote_cache` marks copies of other servers' media (federation).
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    width BIGINT,
    height BIGINT,
    animated BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT,
    remote_cache BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_user ON media (user_id, created_ts);
-- Thumbnails of one media item: pre-made sizes at upload, others on demand.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    animated BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method, animated)
);
