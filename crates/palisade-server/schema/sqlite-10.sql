-- Palisade schema, migration 10 (from version 9), SQLite dialect: event
-- rules read their triggers from the database. Keep in step with
-- postgres-10.sql.
--
-- Before, triggers went to the event rule worker through a bounded queue
-- in one replica's memory, shared by every organization: one that flooded
-- events filled it and the others' triggers were dropped, and a restart
-- lost what was queued. Now the worker reads events from `events` and
-- first sightings from `event_rule_sightings` past each organization's
-- cursor, and moves the cursor after evaluating them.
--
-- One row per organization: the last event and sighting evaluated, and
-- which replica works on the organization until when (a lease, so two
-- replicas do not evaluate the same triggers).
CREATE TABLE event_rule_cursors (
    org_id BIGINT PRIMARY KEY,
    event_id BIGINT NOT NULL,
    sighting_id BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    leased_by TEXT
);
-- Events stored before this migration were handed to the old queue.
INSERT INTO event_rule_cursors (org_id, event_id, sighting_id)
    SELECT id, (SELECT value FROM counters WHERE name = 'events'), 0 FROM orgs;
-- Hashes seen on a computer for the first time, while the organization has
-- file_seen rules; deleted once evaluated. Ids come from the 'sightings'
-- counter under its row lock, like event ids: they commit in id order.
CREATE TABLE event_rule_sightings (
    id INTEGER PRIMARY KEY,
    org_id BIGINT NOT NULL,
    computer_id BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    operation TEXT,
    stored_ms BIGINT NOT NULL
);
CREATE INDEX event_rule_sightings_org ON event_rule_sightings (org_id, id);
INSERT INTO counters (name, value) VALUES ('sightings', 0);
