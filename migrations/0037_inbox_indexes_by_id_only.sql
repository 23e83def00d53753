-- relayforge: finishes an upgrade
-- Applied by `relayforge migrate --finish` once every process runs a release that reads the
-- inbox through 0036's indexes; on a new database, at once. The release before reads a job's
-- deliveries by job_id and the last day's webhooks by received_at: without these indexes those
-- reads would scan the whole inbox. Two index entries fewer per webhook from then on.
DROP INDEX webhook_inbox_job;
DROP INDEX webhook_inbox_received;
DROP INDEX webhook_inbox_tenant_received;
