-- Every runtime query of Relayforge, by name. Invariants live here: dedup is the jobs_dedup
-- unique key, claims use SKIP LOCKED, every job transition is a conditional UPDATE.

------------------------------------------------------------------------------ ingest (one batch)

-- name: ingest_accept
-- One statement records a whole batch: job upsert (first delivery of a key creates the job, the
-- others in or across batches are deduped onto it), inbox rows, and an outbox row per new job.
-- Keys are upserted in sorted order so concurrent batches lock job rows in the same order.
WITH input AS (
    SELECT *
    FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bytea[], $13::text[],
                $14::text[], $15::text[])
        AS i(ord, inbox_id, job_id, tenant_id, source, event_type, provider_event_id, dedup_key,
             payload_hash, headers, body, event, request_id, correlation_id, trace_context)
),
firsts AS (
    SELECT DISTINCT ON (tenant_id, source, dedup_key) *,
           last_value(inbox_id) OVER (PARTITION BY tenant_id, source, dedup_key ORDER BY ord
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_inbox_id
    FROM input
    ORDER BY tenant_id, source, dedup_key, ord
),
job AS (
    INSERT INTO jobs AS j (id, tenant_id, source, dedup_key, event_type, provider_event_id, event,
                           max_attempts, correlation_id, trace_context, first_inbox_id, last_inbox_id)
    SELECT job_id, tenant_id, source, dedup_key, event_type, provider_event_id, event, $16,
           correlation_id, trace_context::jsonb, inbox_id, last_inbox_id
    FROM firsts
    ORDER BY tenant_id, source, dedup_key
    ON CONFLICT (tenant_id, source, dedup_key)
        DO UPDATE SET last_inbox_id = EXCLUDED.last_inbox_id, updated_at = now()
    RETURNING j.id, j.tenant_id, j.source, j.dedup_key, (j.xmax = 0) AS created
),
inbox AS (
    INSERT INTO webhook_inbox (id, tenant_id, source, event_type, provider_event_id, dedup_key,
                               payload_hash, headers, body, accepted, signature_valid, job_id,
                               request_id)
    SELECT i.inbox_id, i.tenant_id, i.source, i.event_type, i.provider_event_id, i.dedup_key,
           i.payload_hash, i.headers::jsonb, i.body, true, true, job.id, i.request_id
    FROM input i JOIN job USING (tenant_id, source, dedup_key)
),
outbox AS (
    INSERT INTO outbox_messages (job_id, tenant_id, routing_key, attempt, headers)
    SELECT job.id, job.tenant_id, $17 || '.' || job.source, 1, f.trace_context::jsonb
    FROM job JOIN firsts f USING (tenant_id, source, dedup_key)
    WHERE job.created
)
SELECT i.ord, job.id AS job_id, (job.created AND i.ord = f.ord) AS job_created
FROM input i
JOIN job USING (tenant_id, source, dedup_key)
JOIN firsts f USING (tenant_id, source, dedup_key);

-- name: inbox_insert_rejected
-- Requests refused after their signature verified: kept as evidence, body only when configured.
INSERT INTO webhook_inbox (id, tenant_id, source, event_type, provider_event_id, dedup_key,
                           payload_hash, headers, body, accepted, signature_valid, rejection_code,
                           request_id)
SELECT id, tenant_id, source, event_type, provider_event_id, NULL, payload_hash, headers::jsonb,
       body, false, true, code, request_id
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::bytea[], $9::text[], $10::text[])
    AS r(id, tenant_id, source, event_type, provider_event_id, payload_hash, headers, body, code,
         request_id);

-- name: stripe_claim_events
-- Returns the (tenant, event) pairs seen for the first time; the others are replays.
INSERT INTO stripe_event_idempotency (tenant_id, event_id)
SELECT * FROM unnest($1::uuid[], $2::text[]) ORDER BY 1, 2
ON CONFLICT DO NOTHING
RETURNING tenant_id, event_id;

-- name: stripe_release_events
-- Undo claims of events refused later in the same transaction (quota): they reserve nothing.
DELETE FROM stripe_event_idempotency s
USING unnest($1::uuid[], $2::text[]) AS r(tenant_id, event_id)
WHERE s.tenant_id = r.tenant_id AND s.event_id = r.event_id;

-- name: quota_lock
-- Locks each tenant's row of today (UTC) and reads its usage; tenants sorted against deadlocks.
INSERT INTO tenant_daily_quota_usage AS q (tenant_id, quota_date, used)
SELECT t, (now() AT TIME ZONE 'UTC')::date, 0 FROM unnest($1::uuid[]) AS t ORDER BY 1
ON CONFLICT (tenant_id, quota_date) DO UPDATE SET used = q.used
RETURNING tenant_id, used;

-- name: quota_charge
UPDATE tenant_daily_quota_usage q
SET used = q.used + r.n
FROM unnest($1::uuid[], $2::int[]) AS r(tenant_id, n)
WHERE q.tenant_id = r.tenant_id AND q.quota_date = (now() AT TIME ZONE 'UTC')::date;

------------------------------------------------------------------------ tenant_provider_secrets

-- name: secrets_for_tenant
-- Expired rows come back too: a tenant that has any DB secret never falls back to the env one.
SELECT nonce, ciphertext, (expires_at IS NULL OR expires_at > now()) AS active,
       EXTRACT(EPOCH FROM (expires_at - now()))::float8 AS expires_in
FROM tenant_provider_secrets
WHERE tenant_id = $1 AND provider = $2
ORDER BY created_at DESC;

-- name: secrets_expire_previous
UPDATE tenant_provider_secrets
SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + make_interval(secs => $3))
WHERE tenant_id = $1 AND provider = $2 AND (expires_at IS NULL OR expires_at > now());

-- name: secrets_insert
INSERT INTO tenant_provider_secrets (id, tenant_id, provider, nonce, ciphertext, fingerprint)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, fingerprint, created_at, expires_at;

-- name: secrets_list
SELECT id, fingerprint, created_at, expires_at
FROM tenant_provider_secrets
WHERE tenant_id = $1 AND provider = $2 AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC;

-- name: secrets_delete
DELETE FROM tenant_provider_secrets WHERE tenant_id = $1 AND provider = $2 AND id = $3 RETURNING id;
