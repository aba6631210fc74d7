-- Palisade schema, migration 5 (from version 4), PostgreSQL dialect: stamps
-- that tell a server whether an admin's grants are still what it read last.
-- Keep in step with sqlite-5.sql.
--
-- Every write to an admin's grants gives the admin a new random
-- `grants_stamp`, and every write to an organization's custom roles a new
-- `roles_stamp`, in the same transaction (triggers, so no writer can forget).
-- A request reads the two stamps with its credential; grants read under the
-- same stamps are still the admin's grants.
ALTER TABLE admins ADD COLUMN grants_stamp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orgs ADD COLUMN roles_stamp BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION palisade_stamp() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
    SELECT floor((random() - 0.5) * 1.8e19)::BIGINT
$$;

CREATE FUNCTION palisade_admin_grants_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE admins SET grants_stamp = palisade_stamp() WHERE id = OLD.admin_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        UPDATE admins SET grants_stamp = palisade_stamp() WHERE id = NEW.admin_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER admin_grants_stamp AFTER INSERT OR UPDATE OR DELETE ON admin_grants
    FOR EACH ROW EXECUTE FUNCTION palisade_admin_grants_stamp();

CREATE FUNCTION palisade_roles_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE orgs SET roles_stamp = palisade_stamp() WHERE id = OLD.org_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        UPDATE orgs SET roles_stamp = palisade_stamp() WHERE id = NEW.org_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER roles_stamp AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH ROW EXECUTE FUNCTION palisade_roles_stamp();
