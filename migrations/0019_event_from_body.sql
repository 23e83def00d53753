-- The body is stored once. Where a connector's event data is a part of the body's JSON, a job
-- keeps no copy of the event: `data_path` says where the data sits in its first delivery's
-- body (webhook_inbox.body of first_inbox_id), and the event is put together from that body and
-- the job's own columns when it is read. Jobs whose event can't be (a form-encoded body, test
-- faults) and every job recorded before this migration keep `event`. Adding nullable columns
-- and dropping NOT NULL rewrite nothing; the CHECK holds for rows written from now on (NOT
-- VALID: no scan of the existing rows, which all have an event).
ALTER TABLE jobs
    ALTER COLUMN event DROP NOT NULL,
    ADD COLUMN occurred_at_unix bigint,
    ADD COLUMN data_path text[],
    ADD CONSTRAINT jobs_event_or_data_path CHECK (event IS NOT NULL OR data_path IS NOT NULL)
        NOT VALID;

ALTER TYPE ingest_row ADD ATTRIBUTE occurred_at_unix bigint, ADD ATTRIBUTE data_path text[];

-- What a delivery's request is made of, now with what it takes to put the event together when
-- the job stores none (the new columns come last: a view keeps its columns' order).
CREATE OR REPLACE VIEW delivery_requests AS
SELECT d.id AS destination_id, j.id AS job_id, d.url, d.payload, d.timeout_ms, d.headers_nonce,
       d.headers_ciphertext, d.max_concurrency, d.rate_limit_per_second, j.source,
       j.event_type, j.event, i.body, i.headers ->> 'content-type' AS content_type,
       ARRAY(SELECT k.nonce FROM destination_secrets k WHERE k.destination_id = d.id
             AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.created_at DESC)
           AS secret_nonces,
       ARRAY(SELECT k.ciphertext FROM destination_secrets k WHERE k.destination_id = d.id
             AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.created_at DESC)
           AS secret_ciphertexts,
       j.provider_event_id, j.occurred_at_unix, j.data_path
FROM destinations d
CROSS JOIN jobs j
LEFT JOIN webhook_inbox i ON i.id = j.first_inbox_id;
