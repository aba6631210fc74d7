-- Palisade schema, migration 14 (from version 13), SQLite dialect: a
-- computer's renewed client certificate, valid beside the one it renews
-- until the agent first uses it (then it replaces it): an agent that
-- renewed but lost the answer keeps the certificate it has. Keep in step
-- with postgres-14.sql.
ALTER TABLE computers ADD COLUMN next_cert_fingerprint TEXT;
CREATE UNIQUE INDEX computers_next_cert ON computers (next_cert_fingerprint);
