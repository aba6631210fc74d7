-- Palisade schema, migration 11 (from version 10), PostgreSQL dialect: the
-- instances agents reported gone, by when, so those past
-- `deleted_instance_retention_days` are found without a scan of the whole
-- table. Keep in step with sqlite-11.sql.
CREATE INDEX file_instances_deleted ON file_instances (deleted_ms) WHERE deleted_ms IS NOT NULL;
