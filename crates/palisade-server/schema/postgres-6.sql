-- Palisade schema, migration 6 (from version 5), PostgreSQL dialect: liveness
-- kept per replica, not per computer. Keep in step with sqlite-6.sql.
--
-- A replica refreshes its own row (`alive_until_ms`) every heartbeat
-- interval; a computer is connected while some `connections` row of it
-- names a replica that is alive. An idle fleet then costs one row write per
-- replica and interval, and a computer's row is written when its first
-- stream on a replica opens and when its last one closes.
-- `token` is the opening replica's, so that closing the last stream deletes
-- only the row it wrote (a stream of the computer that opened meanwhile on
-- the same replica has written another). `computers.connected_until_ms` is
-- no longer read.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    alive_until_ms BIGINT NOT NULL
);
CREATE TABLE connections (
    computer_id BIGINT NOT NULL,
    replica_id TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    token BIGINT NOT NULL,
    PRIMARY KEY (computer_id, replica_id)
);
CREATE INDEX connections_replica ON connections (replica_id);
