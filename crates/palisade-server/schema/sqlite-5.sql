-- Palisade schema, migration 5 (from version 4), SQLite dialect: stamps that
-- tell a server whether an admin's grants are still what it read last.
-- Keep in step with postgres-5.sql.
--
-- Every write to an admin's grants gives the admin a new random
-- `grants_stamp`, and every write to an organization's custom roles a new
-- `roles_stamp`, in the same transaction (triggers, so no writer can forget).
-- A request reads the two stamps with its credential; grants read under the
-- same stamps are still the admin's grants.
--
-- Trigger bodies: no statement in them may end with END (see split_sql).
-- Rebuilding admin_grants or roles in a later migration drops these
-- triggers: create them again there.
ALTER TABLE admins ADD COLUMN grants_stamp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orgs ADD COLUMN roles_stamp BIGINT NOT NULL DEFAULT 0;

CREATE TRIGGER admin_grants_insert_stamp AFTER INSERT ON admin_grants
BEGIN
    UPDATE admins SET grants_stamp = random() WHERE id = NEW.admin_id;
END;
CREATE TRIGGER admin_grants_update_stamp AFTER UPDATE ON admin_grants
BEGIN
    UPDATE admins SET grants_stamp = random() WHERE id IN (OLD.admin_id, NEW.admin_id);
END;
CREATE TRIGGER admin_grants_delete_stamp AFTER DELETE ON admin_grants
BEGIN
    UPDATE admins SET grants_stamp = random() WHERE id = OLD.admin_id;
END;

CREATE TRIGGER roles_insert_stamp AFTER INSERT ON roles
BEGIN
    UPDATE orgs SET roles_stamp = random() WHERE id = NEW.org_id;
END;
CREATE TRIGGER roles_update_stamp AFTER UPDATE ON roles
BEGIN
    UPDATE orgs SET roles_stamp = random() WHERE id IN (OLD.org_id, NEW.org_id);
END;
CREATE TRIGGER roles_delete_stamp AFTER DELETE ON roles
BEGIN
    UPDATE orgs SET roles_stamp = random() WHERE id = OLD.org_id;
END;
