-- Palisade schema, migration 12 (from version 11), PostgreSQL dialect: the
-- index of a computer's instances by path compares paths bytewise
-- (COLLATE "C"), so that the instances under a directory moved away are a
-- range of it (`path >= 'dir/' AND path < 'dir0'`, POST /agent/v1/removed).
-- In the database's own collation that range is not the directory's
-- contents (a linguistic order need not keep a prefix's strings together),
-- and an index in it cannot serve a "C" comparison. Keep in step with
-- sqlite-12.sql.
DROP INDEX file_instances_path;
CREATE INDEX file_instances_path ON file_instances (org_id, computer_id, path COLLATE "C");
