-- Palisade schema, migration 7 (from version 6), PostgreSQL dialect: who made
-- each API token. Keep in step with sqlite-7.sql.
--
-- An admin with `admins:update` may make a token for another admin. Such a
-- token acts as that admin, but it was given by its maker's power: ending
-- the maker's credentials (revoked grant, disabled, locked, password reset)
-- ends the tokens they made for others too. NULL: made by the admin it is
-- for (or before this migration).
ALTER TABLE admin_tokens ADD COLUMN created_by BIGINT;
CREATE INDEX admin_tokens_created_by ON admin_tokens (created_by);
