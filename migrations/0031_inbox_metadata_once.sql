-- The delivery that made its job keeps none of what the job holds: its source, event type and
-- provider event id, and its request id when that is the job's correlation id, are the job's,
-- read from there (relayforge_inbox_metadata). Older rows and every later delivery of a job
-- keep their own. 55 bytes less in the inbox row of a generic webhook. No scan, no rewrite: a
-- NOT NULL dropped (a moment's lock on the inbox) and a function.
ALTER TABLE webhook_inbox ALTER COLUMN source DROP NOT NULL;

-- An inbox row's metadata as it was received, whether the row keeps it or its job does.
CREATE FUNCTION relayforge_inbox_metadata(i webhook_inbox)
RETURNS TABLE (source text, event_type text, provider_event_id text, dedup_key text,
               request_id text)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(i.source, j.source),
           CASE WHEN j.first_inbox_id = i.id THEN j.event_type ELSE i.event_type END,
           CASE WHEN j.first_inbox_id = i.id THEN j.provider_event_id
                ELSE i.provider_event_id END,
           coalesce(i.dedup_key, j.dedup_key),
           CASE WHEN j.first_inbox_id = i.id THEN coalesce(i.request_id, j.correlation_id)
                ELSE i.request_id END
    FROM (SELECT) AS one LEFT JOIN jobs j ON j.id = i.job_id
$$;
