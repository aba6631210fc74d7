-- Palisade schema, migration 8 (from version 7), PostgreSQL dialect: an
-- event's identity includes its time. Keep in step with sqlite-8.sql.
--
-- Events were unique per (computer, agent seq): an upload whose seq was
-- stored already was taken for a retry and dropped (acknowledged, so the
-- agent deleted it). An agent whose event spool was rebuilt (corrupt or
-- missing file) numbered its events afresh, and its new events met old
-- numbers and were lost. A retry re-sends the very event, time included;
-- a new event under a reused number has a time of its own.
ALTER TABLE events DROP CONSTRAINT events_computer_id_seq_key;
ALTER TABLE events ADD CONSTRAINT events_computer_id_seq_time_ms_key UNIQUE (computer_id, seq, time_ms);
