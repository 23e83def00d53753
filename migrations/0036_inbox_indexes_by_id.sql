-- Fewer, narrower indexes on the inbox; 0037 drops the ones these replace.
--
-- webhook_inbox_tenant replaces (tenant_id, received_at DESC, id DESC): the listing pages a
-- tenant's webhooks by id, newest first, which that index could not give in order; this one
-- does, and is 8 bytes narrower.
--
-- webhook_inbox_repeats replaces the index on every row's job_id. The delivery that made its
-- job is found from the job (jobs.first_inbox_id), and it is the one row with a job and no
-- source of its own (0031), so only the rows a job's first delivery is not (repeats, and rows
-- written before 0031) need an entry.
--
-- The time-window reads (webhook_inbox_received's) bound the id instead: ids are UUIDv7.
--
-- Made ON ONLY the inbox (a moment's lock): the runner builds them partition by partition,
-- concurrently, so writes to the inbox never wait for the builds.
CREATE INDEX webhook_inbox_tenant ON ONLY webhook_inbox (tenant_id, id);
CREATE INDEX webhook_inbox_repeats ON ONLY webhook_inbox (job_id) WHERE source IS NOT NULL;
