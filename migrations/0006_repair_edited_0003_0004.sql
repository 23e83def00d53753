-- 0003 and 0004 were edited after they first landed (claimed_by, the unique attempt index,
-- last_grant), so a database migrated before those edits lacks them. This brings such a
-- database to the schema everyone else has; elsewhere it changes nothing. From here on a landed
-- migration is never edited: the runner refuses to start when an applied file's checksum moves.
ALTER TABLE outbox_messages ADD COLUMN IF NOT EXISTS claimed_by text;
DROP INDEX IF EXISTS outbox_job;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_job_attempt ON outbox_messages (job_id, attempt);
ALTER TABLE tenant_daily_quota_usage ADD COLUMN IF NOT EXISTS last_grant integer NOT NULL DEFAULT 0;
