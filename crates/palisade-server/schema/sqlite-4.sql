-- Palisade schema, migration 4 (from version 3), SQLite dialect: admin sign-in
-- (invitations, two-step console sessions). Keep in step with postgres-4.sql.

-- A one-time invitation to set a password (SHA-256 of its secret), and
-- until when it can be used.
ALTER TABLE admins ADD COLUMN invite_sha256 TEXT;
ALTER TABLE admins ADD COLUMN invite_expires_ms BIGINT;

-- Console sessions: 'password' while the second factor is still to come
-- (short-lived, good for nothing but the TOTP step), 'full' after.
ALTER TABLE admin_sessions ADD COLUMN stage TEXT NOT NULL DEFAULT 'full' CHECK (stage IN ('password', 'full'));
