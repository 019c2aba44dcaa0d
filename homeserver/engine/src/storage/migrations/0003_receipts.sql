-- Read receipts (m.read, m.read.private): the latest per user, type and thread.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts (room_id, stream_pos);
-- Delivery receipts (MSC4089): one per event and recipient, visible only to the
-- event's sender.
CREATE TABLE delivery_receipts (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_sender TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX delivery_receipts_sender ON delivery_receipts (event_sender, stream_pos);
