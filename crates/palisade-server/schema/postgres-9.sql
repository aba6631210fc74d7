-- Palisade schema, migration 9 (from version 8), PostgreSQL dialect: sign-in
-- throttling shared by every replica. Keep in step with sqlite-9.sql.
--
-- An attempt claims its (organization, name) for a few seconds before the
-- password or code is checked (busy_until_ms): another attempt on it,
-- through any replica, is refused until the first has counted its
-- failure, so replicas cannot check guesses side by side. A name that is
-- not an admin keeps its failures here too (before, in one replica's
-- memory: comparing replicas, or the database write only real accounts
-- cost, told which names exist). An admin's failures stay on its row.
CREATE TABLE signin_attempts (
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    busy_until_ms BIGINT,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    last_failed_ms BIGINT,
    locked_until_ms BIGINT,
    PRIMARY KEY (org, name)
);
CREATE INDEX signin_attempts_last ON signin_attempts (last_failed_ms);
