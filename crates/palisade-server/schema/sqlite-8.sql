-- Palisade schema, migration 8 (from version 7), SQLite dialect: an event's
-- identity includes its time. Keep in step with postgres-8.sql.
--
-- Events were unique per (computer, agent seq): an upload whose seq was
-- stored already was taken for a retry and dropped (acknowledged, so the
-- agent deleted it). An agent whose event spool was rebuilt (corrupt or
-- missing file) numbered its events afresh, and its new events met old
-- numbers and were lost. A retry re-sends the very event, time included;
-- a new event under a reused number has a time of its own.
-- SQLite cannot alter a UNIQUE constraint: the table is rebuilt.
CREATE TABLE events_v8 (
    id INTEGER PRIMARY KEY,
    org_id BIGINT NOT NULL,
    computer_id BIGINT NOT NULL REFERENCES computers (id),
    seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT,
    path TEXT NOT NULL,
    event_json TEXT NOT NULL,
    UNIQUE (computer_id, seq, time_ms)
);
INSERT INTO events_v8 (id, org_id, computer_id, seq, received_ms, time_ms, kind, sha256, path, event_json)
    SELECT id, org_id, computer_id, seq, received_ms, time_ms, kind, sha256, path, event_json FROM events;
DROP TABLE events;
ALTER TABLE events_v8 RENAME TO events;
CREATE INDEX events_org ON events (org_id, id);
