-- Schema version 7: rooms that span servers.
--
-- Outliers are events we hold without knowing their place in the room's
-- timeline: the state and auth chain received with a remote join, an invite for
-- a room we are not in. They carry a stream position (the primary key) but range
-- reads never return them.
ALTER TABLE events ADD COLUMN outlier BIGINT NOT NULL DEFAULT 0;

-- The state after an event, when it is not simply "the snapshot made by this
-- state event" or "the state before this message": events accepted from other
-- servers, whose state may come from resolving forks.
CREATE TABLE event_state_after (
    event_id TEXT PRIMARY KEY,
    snapshot_id BIGINT NOT NULL
);

-- Stripped state of rooms a local user is invited to over federation; the room
-- itself is unknown here until the user joins.
CREATE TABLE remote_invites (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    stripped_state TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- The outbound queue: one row per PDU or EDU per destination, deleted once the
-- destination has acknowledged the transaction that carried it.
CREATE TABLE federation_outbox (
    id BIGINT PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_dest ON federation_outbox (destination, id);

-- Delivery health per destination: backoff survives a restart.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    retry_at BIGINT NOT NULL DEFAULT 0,
    backoff_ms BIGINT NOT NULL DEFAULT 0,
    last_success_ts BIGINT,
    last_failure_ts BIGINT,
    last_error TEXT
);

-- Inbound transactions already processed, so a retried PUT /send is idempotent.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
