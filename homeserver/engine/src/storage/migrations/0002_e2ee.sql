-- Schema version 2: end-to-end encryption. The server stores public keys,
-- signatures, ciphertext and opaque encrypted backups only; never a private key
-- or a plaintext. Same SQL subset as 0001 (TEXT and BIGINT, booleans as 0/1).

-- A device's identity keys (`/keys/upload` `device_keys`), as signed by the device.
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
-- Unclaimed one-time keys; a claim deletes the row it hands out.
-- `seq` keeps upload order, so keys are claimed oldest first.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_order ON e2e_one_time_keys (user_id, device_id, algorithm, seq);
-- One fallback key per device and algorithm; `used` once it has been claimed.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);
-- Cross-signing keys: `key_type` is master, self_signing or user_signing.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
-- Signatures uploaded through `/keys/signatures/upload`, merged into the signed
-- object on `/keys/query`. `target_key_id` is a device id or the public key of
-- a cross-signing key.
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
-- The stream positions at which a user's devices or keys changed.
CREATE TABLE device_list_changes (
    user_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_pos)
);
CREATE INDEX device_list_changes_pos ON device_list_changes (stream_pos);
-- Each device's to-device inbox. A row is deleted once the device syncs with a
-- token at or past its position (proof of receipt).
CREATE TABLE to_device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_pos)
);
-- `PUT /sendToDevice` transaction ids, per sending device.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_key TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_key)
);
-- The highest stream position a stream ever used, for streams whose rows are
-- deleted (the to-device inbox): positions must never be handed out twice.
CREATE TABLE stream_watermarks (
    stream TEXT PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);
-- Server-side key backup (`/room_keys`). Versions are never reused: a deleted
-- version keeps its row with `deleted = 1`.
CREATE TABLE backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BIGINT NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
