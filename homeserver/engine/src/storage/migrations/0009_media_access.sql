-- Schema version 9: when media was last served, for deleting old local media
-- and purging the remote media cache by last access (admin API).
ALTER TABLE media ADD COLUMN last_access_ts BIGINT;
CREATE INDEX media_cache_access ON media (remote_cache, last_access_ts);
