-- Schema version 6: servers' signing keys.
--
-- Every verify key we know, remote servers' and our own across rotations.
-- valid_until_ts is the validity the server published (capped at a week after
-- fetching); expired_ts is set for keys listed in old_verify_keys.
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    PRIMARY KEY (server_name, key_id)
);

-- The last signed /_matrix/key/v2/server response of each remote server, as
-- received, so that notary queries can be answered with the origin's signature.
CREATE TABLE server_key_responses (
    server_name TEXT PRIMARY KEY,
    response_json TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
