-- Palisade schema, migration 3 (from version 2), SQLite dialect: zero-trust
-- admin access (admin status and credentials, roles, grants, token scopes
-- and expiry, console sessions, conditional access, the audit chain).
-- Keep in step with postgres-3.sql.

-- Admins: status, password (Argon2id PHC string), TOTP, sign-in failures.
ALTER TABLE admins ADD COLUMN status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled'));
ALTER TABLE admins ADD COLUMN password_phc TEXT;
ALTER TABLE admins ADD COLUMN totp_secret TEXT;
ALTER TABLE admins ADD COLUMN totp_pending TEXT;
ALTER TABLE admins ADD COLUMN totp_last_step BIGINT;
ALTER TABLE admins ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE admins ADD COLUMN last_failed_ms BIGINT;
ALTER TABLE admins ADD COLUMN locked_until_ms BIGINT;

-- Recovery codes: SHA-256 of each unused code.
CREATE TABLE recovery_codes (
    admin_id BIGINT NOT NULL REFERENCES admins (id),
    code_sha256 TEXT NOT NULL,
    PRIMARY KEY (admin_id, code_sha256)
);

-- Custom roles (the built-in ones live in code): permissions is a
-- space-separated list of `resource:operation`.
CREATE TABLE roles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id BIGINT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

-- Grants: a role (built-in or custom, by name) for the whole organization
-- (policy_id 0) or one policy.
CREATE TABLE admin_grants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    admin_id BIGINT NOT NULL REFERENCES admins (id),
    role TEXT NOT NULL,
    policy_id BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (admin_id, role, policy_id)
);
CREATE INDEX admin_grants_admin ON admin_grants (admin_id);

-- Every admin that existed before grants did keeps full access.
INSERT INTO admin_grants (admin_id, role, policy_id, created_ms, created_by)
    SELECT id, 'owner', 0, created_ms, 'migration 3' FROM admins;

-- API tokens: name, scope (space-separated permissions; NULL: all of the
-- admin's), expiry, revocation, last use.
ALTER TABLE admin_tokens ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_tokens ADD COLUMN scope TEXT;
ALTER TABLE admin_tokens ADD COLUMN expires_ms BIGINT;
ALTER TABLE admin_tokens ADD COLUMN revoked_ms BIGINT;
ALTER TABLE admin_tokens ADD COLUMN last_used_ms BIGINT;
-- Whether the token was created with a verified second factor (tokens made
-- on the server with database access count as verified).
ALTER TABLE admin_tokens ADD COLUMN mfa BIGINT NOT NULL DEFAULT 1;

-- Console sessions (SHA-256 of the session secret).
CREATE TABLE admin_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    admin_id BIGINT NOT NULL REFERENCES admins (id),
    secret_sha256 TEXT NOT NULL UNIQUE,
    mfa BIGINT NOT NULL,
    source TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX admin_sessions_admin ON admin_sessions (admin_id);

-- Conditional access, per organization.
ALTER TABLE orgs ADD COLUMN require_mfa BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orgs ADD COLUMN trusted_networks TEXT NOT NULL DEFAULT '';
ALTER TABLE orgs ADD COLUMN office_hours TEXT NOT NULL DEFAULT '';

-- The audit log, one chain per organization: append-only, each record
-- chained to the previous one by hash (palisade-authn::audit).
-- audit_heads holds each chain's last seq and hash; appending updates it in
-- the same transaction, which serializes appenders.
CREATE TABLE audit_heads (
    org_id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE audit_log (
    org_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    hash TEXT NOT NULL,
    PRIMARY KEY (org_id, seq)
);
