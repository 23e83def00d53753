-- A process that ingests and consumes begins the first attempt of new jobs in the statement
-- that records them (status processing, leased): they owe no message. Their insert no longer
-- wakes the relay, which would find nothing to claim: a statement of ingest notifies only when
-- one of its new jobs owes a message. No scan, no rewrite; writes to jobs wait only for the
-- trigger's swap.
CREATE FUNCTION relayforge_jobs_notify_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE message_due_at IS NOT NULL) THEN
        PERFORM pg_notify('relayforge_outbox', '');
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER jobs_notify_new ON jobs;
CREATE TRIGGER jobs_notify_new AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION relayforge_jobs_notify_new();

-- What fan-out needs of a tenant, read by the statement that starts a job (job_start, or the
-- ingest statement that begins it): its enabled destinations of events, as JSON text (NULL:
-- none, and nothing more is read for it).
CREATE FUNCTION relayforge_fan_out_destinations(p_tenant uuid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT jsonb_agg(jsonb_build_object(
               'id', d.id, 'filter', d.filter::text, 'max_concurrency', d.max_concurrency,
               'rate_limit_per_second', d.rate_limit_per_second, 'circuit', d.circuit,
               'paused', d.paused))::text
    FROM destinations d
    WHERE d.tenant_id = p_tenant AND d.enabled AND d.kind = 'events'
$$;
