-- Schema version 8: what the admin API records. Same SQL subset as 0001.
-- Shadow-banned users: their sends answer success but are never persisted.
CREATE TABLE shadow_banned_users (
    user_id TEXT PRIMARY KEY,
    banned_ts BIGINT NOT NULL
);
-- Per-user message rate-limit overrides; 0/0 means "not limited".
CREATE TABLE ratelimit_overrides (
    user_id TEXT PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count BIGINT NOT NULL
);
-- Users deactivated with `erase`: profile removed, marked GDPR-erased.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY,
    erased_ts BIGINT NOT NULL
);
-- Rooms nobody on this server may join (the room need not exist here).
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);
-- The room each user receives server notices in.
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
-- Long-running admin jobs (room deletion, history purge) and their outcome,
-- so their status survives the request that started them.
CREATE TABLE admin_jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    result_json TEXT,
    started_ts BIGINT NOT NULL,
    finished_ts BIGINT
);
CREATE INDEX admin_jobs_room ON admin_jobs (room_id, started_ts);
-- "Events today" in the server statistics, and purging history by timestamp.
CREATE INDEX events_ts ON events (origin_server_ts);
-- Media an admin quarantined: downloads and thumbnails answer 404.
CREATE TABLE quarantined_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    quarantined_by TEXT NOT NULL,
    quarantined_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id)
);
