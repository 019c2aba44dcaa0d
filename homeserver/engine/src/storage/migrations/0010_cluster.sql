-- Schema version 10: the instances of a multi-instance deployment
-- (docs/scale-out.md). Each live instance rewrites its row every heartbeat
-- with its stream floor: every position it will ever persist at or below the
-- floor is persisted. Readers on every instance only show positions below
-- the lowest floor of the live instances.
CREATE TABLE cluster_instances (
    instance_id BIGINT PRIMARY KEY,
    boot_id TEXT NOT NULL,
    floor BIGINT NOT NULL,
    heartbeat_ts BIGINT NOT NULL
);
