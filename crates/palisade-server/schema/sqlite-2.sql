-- Palisade schema, migration 2 (from version 1), SQLite dialect: the
-- approval model (publishers, reputation, rules, bundles, approval requests).
-- Keep in step with postgres-2.sql: after it, both dialects have the same
-- tables, columns and constraints.

-- Policies: the `prompt' level becomes valid, and each policy counts how
-- often an admin raised its level asking that existing files be approved.
-- SQLite cannot alter a CHECK constraint: the table is rebuilt (the
-- migration runs with foreign key enforcement off, see db.rs).
CREATE TABLE policies_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id BIGINT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('disabled', 'monitor', 'prompt', 'lockdown')),
    disconnected_level TEXT NOT NULL CHECK (disconnected_level IN ('disabled', 'monitor', 'prompt', 'lockdown')),
    created_ms BIGINT NOT NULL,
    approve_existing_epoch BIGINT NOT NULL DEFAULT 0,
    UNIQUE (org_id, name)
);
INSERT INTO policies_v2 (id, org_id, name, level, disconnected_level, created_ms, approve_existing_epoch)
    SELECT id, org_id, name, level, disconnected_level, created_ms, 0 FROM policies;
DROP TABLE policies;
ALTER TABLE policies_v2 RENAME TO policies;

-- Bumped with every change to what agents' rule sets are built from
-- (rules, bundles, publisher states and trust): replicas cache rule sets
-- by it.
ALTER TABLE orgs ADD COLUMN rules_version BIGINT NOT NULL DEFAULT 0;

-- Publishers (signed package repository origins) an organization knows:
-- attributed by agents, or named by an admin. trust is NULL, or one of the
-- reputation levels.
CREATE TABLE publishers (
    org_id BIGINT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    trust TEXT CHECK (trust IN ('not_trusted', 'low', 'medium', 'high')),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

-- Publisher states; scope_id is 0 for the global scope, else the policy id.
-- 'unapproved' is never stored: it deletes the row.
CREATE TABLE publisher_states (
    org_id BIGINT NOT NULL,
    publisher TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('global', 'policy')),
    scope_id BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('approved', 'banned')),
    updated_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (org_id, publisher, scope_kind, scope_id)
);

-- Reputation: one trust rating (0..10) per hash, from the latest import.
CREATE TABLE reputation (
    org_id BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    trust BIGINT NOT NULL CHECK (trust BETWEEN 0 AND 10),
    source TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, sha256)
);

-- What agents attributed each hash to: the package (and version) that
-- installed it and the package's publisher (NULL: no signed repository
-- provides it); verified = the content matched the package's checksum.
CREATE TABLE file_publishers (
    org_id BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    package TEXT NOT NULL,
    version TEXT NOT NULL,
    publisher TEXT,
    verified BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, sha256, package, version)
);
CREATE INDEX file_publishers_publisher ON file_publishers (org_id, publisher);

-- Rules of every kind; body_json is a palisade_api::admin::RuleBody and
-- kind its tag. A rule applies to every policy unless rule_policies names
-- some. bundle names the built-in bundle that created it.
CREATE TABLE rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id BIGINT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    rank BIGINT NOT NULL,
    enabled BIGINT NOT NULL,
    bundle TEXT,
    body_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX rules_org ON rules (org_id, kind, enabled);

CREATE TABLE rule_policies (
    rule_id BIGINT NOT NULL REFERENCES rules (id),
    policy_id BIGINT NOT NULL REFERENCES policies (id),
    PRIMARY KEY (rule_id, policy_id)
);

-- Built-in bundles an organization enabled (absent: disabled).
CREATE TABLE bundles (
    org_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (org_id, name)
);

-- Users' requests to approve a blocked file on their computer.
CREATE TABLE approval_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id BIGINT NOT NULL,
    computer_id BIGINT NOT NULL REFERENCES computers (id),
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    user_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    process_json TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'granted', 'denied')),
    created_ms BIGINT NOT NULL,
    decided_ms BIGINT,
    decided_by TEXT,
    comment TEXT
);
CREATE INDEX approval_requests_org ON approval_requests (org_id, status, id);
CREATE INDEX approval_requests_file ON approval_requests (computer_id, sha256, status);
-- Instances reported gone (deleted or moved away) by their computer's agent;
-- a later sighting at the same path clears it.
ALTER TABLE file_instances ADD COLUMN deleted_ms BIGINT;
CREATE INDEX file_instances_path ON file_instances (org_id, computer_id, path);
