-- Push notifications (spec: "Push Notifications").
-- One row per notification a user got (an event whose push rules said
-- `notify`), served by GET /notifications and counted per thread.
CREATE TABLE push_notifications (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    -- `main` or the thread root's event id.
    thread_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    actions TEXT NOT NULL,
    highlight BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX push_notifications_user ON push_notifications (user_id, stream_pos);
CREATE INDEX push_notifications_thread ON push_notifications (user_id, room_id, thread_id, stream_pos);
-- Unread counts per user, room and thread; `read_pos` is the stream position of
-- the event the user's newest read receipt points at; `stream_pos` orders changes for /sync.
CREATE TABLE push_counts (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notif_count BIGINT NOT NULL,
    highlight_count BIGINT NOT NULL,
    read_pos BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
-- Pushers (POST /pushers/set). `data` is the pusher's JSON `data` object.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);
-- The delivery queue: one row per notification and pusher until the gateway
-- accepts it (or rejects the pushkey). Survives restarts.
CREATE TABLE push_queue (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    -- The matching rule's actions (the notification's tweaks).
    actions TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ts BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id, event_id)
);
CREATE INDEX push_queue_due ON push_queue (next_attempt_ts)
