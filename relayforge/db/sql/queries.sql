-- Every runtime query of Relayforge, by name. Invariants live here: dedup is the jobs_key
-- unique key (a digest of tenant, source and dedup key), claims use SKIP LOCKED, every job
-- transition is a conditional UPDATE.

------------------------------------------------------------------------------ ingest (one batch)

-- name: ingest_accept
-- One statement records a whole batch: job upsert (first delivery of a key creates the job, the
-- others in or across batches are deduped onto it) and inbox rows. A new job is its own outbox
-- entry: it owes the message of its first attempt (message_due_at). An inbox row's dedup key is
-- its job's, stored there alone, and its payload hash is its body's (both read back so); the
-- row of the delivery that made its job keeps none of the metadata the job holds (read back
-- with relayforge_inbox_metadata). The body is stored once, in the inbox: a job whose event
-- can be put together from its first delivery's body stores only where the data sits
-- (data_path), no event. $5: each item's dedup digest (job_key), in the items' order. With $6
-- (once the upgrade to digests is finished) a key that is the body's hash is not stored (read
-- back from the first delivery's body), nor the last delivery when it is the first (readers
-- take coalesce(last_inbox_id, first_inbox_id)).
-- Keys are upserted in sorted order so concurrent batches lock job rows in the same order.
-- A new job among $3 starts its first attempt here (leased for $4 seconds, as job_start does):
-- this process runs it, with no message; it owes one only if the lease lapses. Those return
-- what fan-out needs, as job_start does.
WITH input AS (
    SELECT inbox_id, job_id, tenant_id, source, event_type, provider_event_id, dedup_key,
           payload_hash, headers, body, event, request_id, correlation_id, trace_context,
           occurred_at_unix, data_path, dedup_digest, (n - 1)::int AS ord,
           job_id = ANY($3::uuid[]) AS here
    FROM ROWS FROM (unnest($1::ingest_row[]), unnest($5::uuid[])) WITH ORDINALITY
        AS i(inbox_id, job_id, tenant_id, source, event_type, provider_event_id, dedup_key,
             payload_hash, headers, body, event, request_id, correlation_id, trace_context,
             occurred_at_unix, data_path, dedup_digest, n)
),
firsts AS (
    SELECT DISTINCT ON (tenant_id, source, dedup_key) *,
           last_value(inbox_id) OVER (PARTITION BY tenant_id, source, dedup_key ORDER BY ord
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_inbox_id
    FROM input
    ORDER BY tenant_id, source, dedup_key, ord
),
job AS (
    INSERT INTO jobs AS j (id, tenant_id, source, dedup_key, dedup_digest, event_type,
                           provider_event_id, event,
                           occurred_at_unix, data_path, max_attempts, correlation_id,
                           trace_context, first_inbox_id, last_inbox_id, message_due_at,
                           status, attempts, lease_expires_at)
    SELECT job_id, tenant_id, source,
           CASE WHEN $6 AND dedup_key = 'hash:' || payload_hash THEN NULL ELSE dedup_key END,
           dedup_digest, event_type, provider_event_id, event,
           occurred_at_unix, data_path, $2, correlation_id, trace_context::jsonb, inbox_id,
           CASE WHEN $6 AND last_inbox_id = inbox_id THEN NULL ELSE last_inbox_id END,
           CASE WHEN here THEN NULL ELSE now() END,
           CASE WHEN here THEN 'processing' ELSE 'pending' END, here::int,
           CASE WHEN here THEN now() + make_interval(secs => $4) END
    FROM firsts
    ORDER BY tenant_id, source, dedup_key
    ON CONFLICT ((coalesce(dedup_digest, relayforge_job_key(tenant_id, source, dedup_key))))
        DO UPDATE SET last_inbox_id = coalesce(EXCLUDED.last_inbox_id, EXCLUDED.first_inbox_id),
                      updated_at = now()
    RETURNING j.id, j.first_inbox_id, j.correlation_id,
              coalesce(j.dedup_digest, relayforge_job_key(j.tenant_id, j.source, j.dedup_key))
                  AS dedup_digest
),
arrived AS (  -- each delivery with its job; `made`: the one that made it (its first inbox row)
    SELECT i.*, job.id AS recorded_job, job.correlation_id AS job_correlation_id,
           job.first_inbox_id = i.inbox_id AS made
    FROM input i JOIN job USING (dedup_digest)
),
inbox AS (
    INSERT INTO webhook_inbox (id, tenant_id, source, event_type, provider_event_id, dedup_key,
                               payload_hash, headers, body, accepted, signature_valid, job_id,
                               request_id)
    SELECT inbox_id, tenant_id, CASE WHEN made THEN NULL ELSE source END,
           CASE WHEN made THEN NULL ELSE event_type END,
           CASE WHEN made THEN NULL ELSE provider_event_id END, NULL, NULL,
           headers::jsonb, body, true, true, recorded_job,
           CASE WHEN made AND request_id = job_correlation_id THEN NULL ELSE request_id END
    FROM arrived
)
SELECT ord, recorded_job AS job_id, made AS job_created,
       CASE WHEN made AND here THEN relayforge_fan_out_destinations(tenant_id) END
           AS destinations
FROM arrived;

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
-- Returns the (tenant, source, event) keys seen for the first time; the others are replays.
-- Keys are claimed in generations of $4 days, at the moment $5: a key held by this generation
-- or the one before is a replay. Near its end a generation's new keys are claimed in the next
-- one too (relayforge_generation_claim_days), so two claims on either side of the boundary meet
-- in one unique index; a key claimed in only some of its generations lost such a race, and the
-- transaction is tried again (serialization_failure), to find it a replay.
WITH keys AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS r(tenant_id, source, event_id)
),
days AS (
    SELECT relayforge_generation_claim_days($5::timestamptz, $4) AS claim,
           relayforge_generation(($5::timestamptz AT TIME ZONE 'UTC')::date, $4) AS this
),
claimed AS (
    INSERT INTO stripe_event_idempotency (tenant_id, source, event_id, generation)
    SELECT k.tenant_id, k.source, k.event_id, g.generation
    FROM keys k, days, unnest(days.claim) AS g(generation)
    WHERE NOT EXISTS (
        SELECT 1 FROM stripe_event_idempotency s
        WHERE s.tenant_id = k.tenant_id AND s.source = k.source AND s.event_id = k.event_id
          AND s.generation >= days.this - $4 AND s.generation <= days.this + $4)
    ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, source, event_id
),
counted AS (
    SELECT tenant_id, source, event_id, count(*) AS claims FROM claimed GROUP BY 1, 2, 3
)
SELECT c.tenant_id, c.source, c.event_id,
       c.claims = cardinality(days.claim)
           OR relayforge_retry('a replay key raced across a generation boundary') AS fresh
FROM counted c, days;

-- name: stripe_seen_events
-- The keys this generation ($4 days, at the moment $5) or the one before holds already.
SELECT DISTINCT s.tenant_id, s.source, s.event_id
FROM stripe_event_idempotency s
JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS r(tenant_id, source, event_id)
  USING (tenant_id, source, event_id)
WHERE s.generation >= relayforge_generation(($5::timestamptz AT TIME ZONE 'UTC')::date, $4) - $4
  AND s.generation <= relayforge_generation(($5::timestamptz AT TIME ZONE 'UTC')::date, $4) + $4;

-- name: quota_reserve
-- One statement per batch, outside the ingest transaction: the tenant's row is locked only
-- while it runs. Grants what is left of today's (UTC) quota, up to what was asked; SET sees
-- the row as it was, so `granted` is the difference this statement made.
INSERT INTO tenant_daily_quota_usage AS q (tenant_id, quota_date, used, last_grant)
SELECT r.tenant_id, (now() AT TIME ZONE 'UTC')::date, LEAST(r.n, $3), LEAST(r.n, $3)
FROM unnest($1::uuid[], $2::int[]) AS r(tenant_id, n)
ORDER BY r.tenant_id
ON CONFLICT (tenant_id, quota_date) DO UPDATE
    SET used = LEAST($3, q.used + EXCLUDED.used),
        last_grant = LEAST($3, q.used + EXCLUDED.used) - q.used
RETURNING tenant_id, quota_date, last_grant AS granted;

-- name: quota_refund
-- Units of refused or unrecorded requests go back: a refused request reserves nothing.
UPDATE tenant_daily_quota_usage q
SET used = GREATEST(0, q.used - r.n)
FROM unnest($1::uuid[], $2::int[]) AS r(tenant_id, n)
WHERE q.tenant_id = r.tenant_id AND q.quota_date = $3;

------------------------------------------------------------------------ tenant_provider_secrets

-- name: secrets_for_tenant
-- The active secrets of a tenant's provider, and whether the tenant is managed (has ever had a
-- DB secret for it): a managed tenant never falls back to the env secret, even with none left.
-- Always one row at least; nonce is NULL when no secret is active.
SELECT m.tenant_id IS NOT NULL AS managed, s.nonce, s.ciphertext,
       EXTRACT(EPOCH FROM (s.expires_at - now()))::float8 AS expires_in
FROM (SELECT 1) AS one
LEFT JOIN tenant_managed_providers m ON m.tenant_id = $1 AND m.provider = $2
LEFT JOIN tenant_provider_secrets s
       ON s.tenant_id = $1 AND s.provider = $2 AND (s.expires_at IS NULL OR s.expires_at > now())
ORDER BY s.created_at DESC;

-- name: secrets_newest
-- The newest stored secrets: at start they must decrypt with SECRETS__MASTER_KEY.
SELECT tenant_id, provider, nonce, ciphertext
FROM tenant_provider_secrets ORDER BY created_at DESC LIMIT $1;

-- name: secrets_managed
-- Every (tenant, provider) that has ever had a DB secret; at most $1 rows.
SELECT tenant_id, provider FROM tenant_managed_providers LIMIT $1;

-- name: secrets_mark_managed
-- Returns a row only the first time: the tenant was on the env secret until now.
INSERT INTO tenant_managed_providers (tenant_id, provider) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING since;

-- name: secrets_expire_previous
UPDATE tenant_provider_secrets
SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + make_interval(secs => $3))
WHERE tenant_id = $1 AND provider = $2 AND (expires_at IS NULL OR expires_at > now());

-- name: secrets_insert
-- $7: seconds until it expires, NULL for a current secret.
INSERT INTO tenant_provider_secrets (id, tenant_id, provider, nonce, ciphertext, fingerprint,
                                     expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
RETURNING id, fingerprint, created_at, expires_at;

-- name: secrets_list
SELECT id, fingerprint, created_at, expires_at
FROM tenant_provider_secrets
WHERE tenant_id = $1 AND provider = $2 AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC, expires_at DESC NULLS FIRST;  -- the current one first

-- name: secrets_delete
DELETE FROM tenant_provider_secrets WHERE tenant_id = $1 AND provider = $2 AND id = $3 RETURNING id;

---------------------------------------------------------------------- the jobs' outbox (relay)

-- name: outbox_claim
-- The due messages of jobs, in due order: run in the transaction that publishes them, their
-- rows stay locked (SKIP LOCKED: other relays take the next ones) until it marks them sent.
-- Nothing of the claim is written: a relay that dies mid-batch leaves its rows claimable the
-- moment its transaction ends. A message carries the job's trace context and correlation id.
SELECT id AS job_id, tenant_id, source, attempts + 1 AS attempt,
       jsonb_strip_nulls(trace_context || jsonb_build_object('correlation_id', correlation_id))::text
           AS headers
FROM jobs
WHERE message_due_at <= now()
ORDER BY message_due_at, id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: outbox_mark_sent
-- Confirmed messages: their jobs are queued (each was locked by the claim, so none has started
-- meanwhile). A reprocessed or re-armed job may carry failures from before: cleared with it.
UPDATE jobs
SET status = 'queued', message_due_at = NULL, publish_failures = NULL, updated_at = now()
WHERE id = ANY($1::uuid[]) AND message_due_at IS NOT NULL;

-- name: outbox_release
-- Not published (the broker was down): due again shortly.
UPDATE jobs SET message_due_at = now() + make_interval(secs => $2)
WHERE id = ANY($1::uuid[]) AND message_due_at IS NOT NULL;

-- name: outbox_publish_failed
-- Messages the broker refused while it was up (it took others, or refused this one by name):
-- one more failure each. A job at $4 failures is set aside: dead-lettered with the reason, so
-- it never blocks the messages behind it; a reprocess gives it a message again.
WITH failed AS (
    SELECT f.id, f.error, coalesce(j.publish_failures, 0) + 1 AS failures
    FROM unnest($1::uuid[], $2::text[]) AS f(id, error) JOIN jobs j ON j.id = f.id
    WHERE j.message_due_at IS NOT NULL
)
UPDATE jobs j
SET publish_failures = f.failures, updated_at = now(),
    message_due_at = CASE WHEN f.failures >= $4 THEN NULL
                          ELSE now() + make_interval(secs => $3) END,
    status = CASE WHEN f.failures >= $4 THEN 'dead_lettered' ELSE j.status END,
    last_error = CASE WHEN f.failures >= $4
                      THEN 'its message could not be published (' || f.failures || ' tries): '
                           || f.error
                      ELSE j.last_error END
FROM failed f
WHERE j.id = f.id
RETURNING j.id, j.status = 'dead_lettered' AS set_aside;

-- name: deliveries_release_mine
-- After an error a relay can't know which claims of deliveries went through (a reply lost with
-- its connection): it gives back every one it holds instead of waiting for the leases (a start
-- or a deferral has cleared the claim of any that went through).
UPDATE deliveries SET claimed_until = NULL, claimed_by = NULL
WHERE claimed_by = $1 AND claimed_until IS NOT NULL AND status IN ('pending', 'retrying');

-- name: pipeline_lag
-- What /metrics shows of the pipeline, in one cheap statement (partial and status indexes):
-- the messages owed and how long the most overdue one has been due (0: none due yet), the jobs
-- waiting in each open state and the age of the oldest one waiting for a consumer.
SELECT (SELECT count(*) FROM jobs WHERE message_due_at IS NOT NULL) AS outbox_pending,
       (SELECT greatest(0, EXTRACT(EPOCH FROM now() - min(message_due_at)))::float8
        FROM jobs WHERE message_due_at IS NOT NULL) AS outbox_oldest_age,
       (SELECT count(*) FROM jobs WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM jobs WHERE status = 'queued') AS queued,
       (SELECT count(*) FROM jobs WHERE status = 'processing') AS processing,
       (SELECT count(*) FROM jobs WHERE status = 'retrying') AS retrying,
       (SELECT EXTRACT(EPOCH FROM now() - min(updated_at))::float8
        FROM jobs WHERE status IN ('queued', 'retrying')) AS oldest_waiting_age;

-- name: outbox_pending_count
SELECT count(*) FROM jobs WHERE message_due_at IS NOT NULL;

-- name: relay_next_due
-- Seconds until the relay has work (negative when overdue; NULL: none), in the outbox and in
-- deliveries. A claimed delivery is due when its claim lapses (it is being published, or
-- attempted by a consumer, meanwhile): not "overdue", which would have the relay poll until it
-- is done. A paused destination's deliveries are not due.
SELECT
    (SELECT EXTRACT(EPOCH FROM (min(message_due_at) - now()))::float8
     FROM jobs WHERE message_due_at IS NOT NULL) AS outbox,
    (SELECT EXTRACT(EPOCH FROM (min(greatest(w.available_at, w.claimed_until)) - now()))::float8
     FROM deliveries w
     WHERE w.status IN ('pending', 'retrying')
       AND NOT EXISTS (SELECT 1 FROM destinations d WHERE d.id = w.destination_id AND d.paused))
        AS deliveries;

-- name: outbox_requeue_volatile
-- With the in-process broker, messages die with the process: every job queued (its message
-- was sent) owes it again.
UPDATE jobs SET message_due_at = now()
WHERE status = 'queued' AND message_due_at IS NULL
RETURNING id;

-- name: jobs_republish_stranded
-- A job `queued` for longer than $1 seconds lost its message (a purged queue, a broker that lost
-- a non-replicated queue): the message of its next attempt is published again. Should the first
-- copy turn up after all, job_start drops it as a stale duplicate.
WITH stranded AS (
    SELECT id FROM jobs
    WHERE status = 'queued' AND message_due_at IS NULL
      AND updated_at < now() - make_interval(secs => $1)
    ORDER BY updated_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET updated_at = now(), message_due_at = now()
FROM stranded s WHERE j.id = s.id
RETURNING j.id AS job_id;

-- name: outbox_prune_sent
-- What versions before the jobs were their own outbox left (the table is empty after them).
DELETE FROM outbox_messages WHERE status = 'sent' AND sent_at < now() - make_interval(days => $1);

------------------------------------------------------------------------------ jobs (consumer)

-- name: jobs_start
-- The only way into `processing`: each message must start exactly its job's next attempt. One
-- statement for the messages a consumer took at once ($1 job ids, $2 the attempts they start).
-- Every multi-row update of jobs takes its row locks in id order first (`locked`), so batches
-- of the relay and consumers never deadlock on each other.
-- (`locked` carries each message's attempt: the update joins it alone, as a join of two CTEs,
-- each guessed at one row, is planned as a nested loop comparing every pair.)
-- Returns what fan-out needs, read once per tenant (nothing more for tenants without
-- destinations), and the first delivery's body and content type where the event is put
-- together from it or a destination may be sent it: a delivery's request reads neither again.
WITH locked AS (
    SELECT j.id, m.attempt
    FROM jobs j JOIN unnest($1::uuid[], $2::int[]) AS m(id, attempt) ON m.id = j.id
    ORDER BY j.id FOR UPDATE OF j
),
started AS (
    UPDATE jobs j
    SET status = 'processing', attempts = j.attempts + 1, updated_at = now(),
        lease_expires_at = now() + make_interval(secs => $3),
        message_due_at = NULL  -- a copy of the message started it: a message re-armed is moot
    FROM locked m
    WHERE j.id = m.id
      AND j.status IN ('pending', 'queued', 'retrying') AND j.attempts = m.attempt - 1
      AND j.attempts < j.max_attempts
    RETURNING j.id, j.tenant_id, j.source, j.attempts, j.max_attempts, j.correlation_id,
              j.trace_context, j.event, j.event_type, j.provider_event_id,
              j.occurred_at_unix, j.data_path, j.first_inbox_id
),
tenants AS MATERIALIZED (  -- (else the function is called for every job)
    SELECT t.tenant_id, relayforge_fan_out_destinations(t.tenant_id) AS destinations
    FROM (SELECT DISTINCT tenant_id FROM started) t
)
SELECT s.id, s.tenant_id, s.source, s.attempts, s.max_attempts, s.correlation_id,
       s.trace_context::text AS trace_context,
       -- the event, or what it is put together from (the first delivery's body)
       s.event, s.event_type, s.provider_event_id, s.occurred_at_unix, s.data_path,
       i.body, i.headers ->> 'content-type' AS content_type, t.destinations
FROM started s
JOIN tenants t USING (tenant_id)
LEFT JOIN webhook_inbox i
    ON i.id = s.first_inbox_id AND (s.event IS NULL OR t.destinations IS NOT NULL);

-- name: job_event
SELECT j.event, j.source, j.event_type, j.provider_event_id, j.occurred_at_unix, j.data_path,
       (SELECT i.body FROM webhook_inbox i WHERE i.id = j.first_inbox_id AND j.event IS NULL)
           AS body
FROM jobs j WHERE j.id = $1;

-- name: job_state
SELECT status, attempts, max_attempts, last_error FROM jobs WHERE id = $1;

-- name: jobs_succeed
-- An attempt's outcome stands as long as no later attempt has started (attempts = its attempt),
-- even if its lease expired meanwhile and the recovery scheduled the next try: that message is
-- dropped. One statement for the successes of a moment ($1 job ids, $2 attempts).
WITH locked AS (
    SELECT j.id, m.attempt
    FROM jobs j JOIN unnest($1::uuid[], $2::int[]) AS m(id, attempt) ON m.id = j.id
    ORDER BY j.id FOR UPDATE OF j
)
UPDATE jobs j
SET status = 'succeeded', last_error = NULL, lease_expires_at = NULL, updated_at = now()
FROM locked m
WHERE j.id = m.id AND j.attempts = m.attempt AND j.status <> 'succeeded'
RETURNING j.id, extract(epoch FROM clock_timestamp() - j.created_at)::float8 AS end_to_end;

-- name: job_retry
-- Fail the attempt and schedule the next one, atomically: the job owes the message of its next
-- attempt after the backoff ($4 seconds), carrying the failed attempt's trace context ($5).
WITH j AS (
    UPDATE jobs SET status = 'retrying', last_error = $3, lease_expires_at = NULL, updated_at = now(),
                    message_due_at = now() + make_interval(secs => $4), trace_context = $5::jsonb
    WHERE id = $1 AND attempts = $2 AND status IN ('processing', 'retrying', 'queued')
      AND message_due_at IS NULL  -- scheduled once
    RETURNING id, attempts
),
logged AS (  -- the failed attempt, for the console's timeline
    INSERT INTO job_attempts (job_id, attempt, error) SELECT id, attempts, $3 FROM j
    ON CONFLICT (job_id, attempt) DO NOTHING
)
SELECT id AS job_id FROM j;

-- name: job_dead_letter
WITH j AS (
    UPDATE jobs SET status = 'dead_lettered', last_error = $3, lease_expires_at = NULL,
                    updated_at = now()
    WHERE id = $1 AND attempts = $2 AND status NOT IN ('succeeded', 'dead_lettered')
    RETURNING id, attempts
),
logged AS (
    INSERT INTO job_attempts (job_id, attempt, error) SELECT id, attempts, $3 FROM j
    ON CONFLICT (job_id, attempt) DO NOTHING
)
SELECT id FROM j;

-- name: jobs_recover_expired
-- Jobs whose consumer died mid-attempt: the attempt counts as failed; retried or dead-lettered.
WITH expired AS (
    SELECT id FROM jobs
    WHERE status = 'processing' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
moved AS (
    UPDATE jobs j
    SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'dead_lettered' ELSE 'retrying' END,
        message_due_at = CASE WHEN j.attempts >= j.max_attempts THEN NULL ELSE now() END,
        last_error = 'lease expired: the consumer of attempt ' || j.attempts || ' stopped',
        lease_expires_at = NULL, updated_at = now()
    FROM expired e
    WHERE j.id = e.id
    RETURNING j.id, j.attempts, j.status
),
logged AS (
    INSERT INTO job_attempts (job_id, attempt, error)
    SELECT id, attempts, 'lease expired: the consumer of attempt ' || attempts || ' stopped'
    FROM moved
    ON CONFLICT (job_id, attempt) DO NOTHING
)
SELECT id, status FROM moved;

-- name: jobs_reprocess
-- Dead-lettered jobs only (one by id, or many by filter): max_attempts rises by
-- WORKER__MAX_ATTEMPTS ($5, a fresh budget) and the job owes the message of its next attempt
-- (a job set aside as unpublishable gets its tries back).
WITH picked AS (
    SELECT id FROM jobs
    WHERE status = 'dead_lettered'
      AND ($6::uuid IS NULL OR id = $6)
      AND ($1::uuid IS NULL OR tenant_id = $1)
      AND ($2::text IS NULL OR source = $2)
      AND ($3::text IS NULL OR event_type = $3)
    ORDER BY created_at, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'pending', max_attempts = jobs.max_attempts + $5, updated_at = now(),
                message_due_at = now(), publish_failures = NULL
FROM picked WHERE jobs.id = picked.id AND jobs.status = 'dead_lettered'
RETURNING jobs.id AS job_id;

------------------------------------------------------------------------------ process leases

-- name: process_lease_renew
-- Renew this process's lease ($1 its id, $2 its kind, $3 seconds) and say how many processes
-- of its kind hold one, and how many of them sort before it (its rank): its share of every
-- limit. Leases that expired a minute ago are cleared on the way.
WITH renewed AS (
    INSERT INTO process_leases (id, kind, expires_at)
    VALUES ($1, $2, now() + make_interval(secs => $3))
    ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
),
cleared AS (
    DELETE FROM process_leases WHERE expires_at < now() - interval '1 minute'
)
SELECT 1 + count(*) AS members, count(*) FILTER (WHERE id < $1) AS rank
FROM process_leases
WHERE kind = $2 AND id <> $1 AND expires_at > now();

-- name: process_lease_release
DELETE FROM process_leases WHERE id = $1;

------------------------------------------------------------------------------------- retention

-- name: retention_lock
-- One process prunes at a time: a session lock (a partition's detach runs outside any
-- transaction), held on a connection of its own and given back when the prune ends. The key
-- is the project's own: 'relayforge.retention'.
SELECT pg_try_advisory_lock(hashtext('relayforge.retention'));

-- name: retention_unlock
SELECT pg_advisory_unlock(hashtext('relayforge.retention'));

-- name: prune_jobs
DELETE FROM jobs
WHERE status IN ('succeeded', 'dead_lettered') AND updated_at < now() - make_interval(days => $1);

-- name: prune_quota
DELETE FROM tenant_daily_quota_usage WHERE quota_date < (now() AT TIME ZONE 'UTC')::date - 7;

-- name: partitions_ensure
-- The day partitions of every partitioned table from $1 to $2 (UTC dates): the ones made now.
SELECT parent, day FROM relayforge_ensure_partitions($1::date, $2::date);

-- name: generations_ensure
-- The generation partitions of $1 ($3 days each) holding the days $2: the days made now.
SELECT d AS day FROM unnest($2::date[]) AS d WHERE relayforge_ensure_generation($1::regclass, d, $3);

-- name: partitions_list
-- The partitions of every partitioned table, oldest first: the moments their rows begin (NULL:
-- from the first) and end (NULL: open-ended), and whether a detach was left half done.
SELECT p.relname AS parent, c.relname AS name,
       relayforge_bound_time(substring(b.bound FROM 'FROM \(''([^'']*)''\)')) AS starts_at,
       relayforge_bound_time(substring(b.bound FROM 'TO \(''([^'']*)''\)')) AS ends_at,
       i.inhdetachpending AS detaching
FROM pg_partitioned_table pt
JOIN pg_class p ON p.oid = pt.partrelid AND p.relnamespace = 'public'::regnamespace
JOIN pg_inherits i ON i.inhparent = p.oid
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
ORDER BY p.relname, ends_at NULLS LAST;

-- name: partitions_oldest_rows
-- When each partitioned table's oldest row was written.
SELECT p.relname AS parent, relayforge_oldest_row(p.oid) AS oldest
FROM pg_partitioned_table pt
JOIN pg_class p ON p.oid = pt.partrelid AND p.relnamespace = 'public'::regnamespace;

-- name: inbox_partition_in_use
-- Whether a job still reads its body from inbox rows written from $1 (NULL: from the first) to
-- $2. A job's id and its first delivery's id are made in the same request: the job is found by
-- its key within a day of the rows.
SELECT EXISTS (
    SELECT 1 FROM jobs j
    WHERE j.id >= relayforge_uuid7_floor(COALESCE($1::timestamptz, 'epoch') - interval '1 day')
      AND j.id < relayforge_uuid7_floor($2::timestamptz + interval '1 day')
      AND j.first_inbox_id >= relayforge_uuid7_floor(COALESCE($1::timestamptz, 'epoch'))
      AND j.first_inbox_id < relayforge_uuid7_floor($2::timestamptz));

-- name: partition_detach
-- Outside a transaction: writes to the other partitions never wait. {parent} and {name} are
-- identifiers from partitions_list.
ALTER TABLE public.{parent} DETACH PARTITION partitions.{name} CONCURRENTLY;

-- name: partition_detach_finalize
-- A detach that was interrupted (its connection lost) is finished before anything else.
ALTER TABLE public.{parent} DETACH PARTITION partitions.{name} FINALIZE;

-- name: partition_drop
DROP TABLE partitions.{name};

---------------------------------------------------------------------- admin_api_keys, audit log

-- name: api_key_lookup
SELECT id, role FROM admin_api_keys WHERE key_hash = $1 AND revoked_at IS NULL;

-- name: api_key_insert
INSERT INTO admin_api_keys (id, name, key_hash, role) VALUES ($1, $2, $3, $4)
RETURNING id, name, role, created_at;

-- name: api_key_list
SELECT id, name, role, created_at, revoked_at FROM admin_api_keys ORDER BY created_at DESC;

-- name: api_key_revoke
UPDATE admin_api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id;

-- name: audit_insert
INSERT INTO admin_audit_log (key_id, key_source, role, action, target, detail)
VALUES ($1, $2, $3, $4, $5, $6::jsonb);

----------------------------------------------------------------------------- admin read models

-- name: admin_jobs_list
-- Newest first; ids are time-ordered (UUIDv7), so the cursor is the last id seen.
SELECT id, tenant_id, source, event_type, provider_event_id, status, attempts, max_attempts,
       last_error, created_at, updated_at, first_inbox_id,
       coalesce(last_inbox_id, first_inbox_id) AS last_inbox_id
FROM jobs
WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR tenant_id = $2)
  AND ($3::text IS NULL OR source = $3) AND ($4::text IS NULL OR event_type = $4)
  AND ($5::uuid IS NULL OR id < $5)
  AND ($7::text IS NULL OR provider_event_id = $7)
  AND ($8::timestamptz IS NULL OR created_at >= $8)
  AND ($9::timestamptz IS NULL OR created_at < $9)
ORDER BY id DESC
LIMIT $6;

-- name: job_keys_finished
-- Whether the upgrade that keys jobs by their dedup digest is finished (0034 dropped
-- jobs_dedup): from then on no process of the release before, which matches jobs by the key
-- itself, writes jobs.
SELECT to_regclass('jobs_dedup') IS NULL;

-- name: admin_job_get
SELECT id, tenant_id, source, event_type, provider_event_id, status, attempts, max_attempts,
       last_error, created_at, updated_at, first_inbox_id,
       coalesce(last_inbox_id, first_inbox_id) AS last_inbox_id
FROM jobs WHERE id = $1;

-- name: admin_inbox_list
-- An accepted delivery is read with its job (relayforge_inbox_metadata).
SELECT i.id, i.tenant_id, m.source, m.event_type, m.provider_event_id, m.dedup_key,
       coalesce(i.payload_hash, encode(sha256(i.body), 'hex')) AS payload_hash, i.accepted,
       i.signature_valid, i.rejection_code, i.job_id, m.request_id, i.received_at
FROM webhook_inbox i, relayforge_inbox_metadata(i) m
WHERE ($1::uuid IS NULL OR i.tenant_id = $1) AND ($2::text IS NULL OR m.source = $2)
  AND ($3::boolean IS NULL OR i.accepted = $3) AND ($4::uuid IS NULL OR i.id < $4)
ORDER BY i.id DESC
LIMIT $5;

-- name: admin_inbox_get
SELECT i.id, i.tenant_id, m.source, m.event_type, m.provider_event_id, m.dedup_key,
       coalesce(i.payload_hash, encode(sha256(i.body), 'hex')) AS payload_hash, i.accepted,
       i.signature_valid, i.rejection_code, i.job_id, m.request_id, i.received_at,
       i.headers::text AS headers, i.body
FROM webhook_inbox i, relayforge_inbox_metadata(i) m WHERE i.id = $1;

-- name: admin_job_counts
SELECT status, count(*) AS n FROM jobs WHERE ($1::uuid IS NULL OR tenant_id = $1) GROUP BY status;

-- name: admin_inbox_counts
-- Time windows on the inbox bound its id (a UUIDv7 made at receipt, on the server's clock) to
-- reach only the rows and partitions they need, five minutes early for a clock behind
-- PostgreSQL's, and filter on received_at for the exact window.
SELECT count(*) FILTER (WHERE accepted) AS accepted, count(*) FILTER (WHERE NOT accepted) AS rejected
FROM webhook_inbox
WHERE id >= relayforge_uuid7_floor(now() - interval '24 hours' - interval '5 minutes')
  AND received_at > now() - interval '24 hours' AND ($1::uuid IS NULL OR tenant_id = $1);

-- ============================================================================ destinations

-- name: destination_insert
INSERT INTO destinations (id, tenant_id, name, url, enabled, filter, header_names, headers_nonce,
                          headers_ciphertext, payload, timeout_ms, rate_limit_per_second,
                          max_concurrency, kind)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING id;

-- name: destination_secret_insert
INSERT INTO destination_secrets (id, destination_id, nonce, ciphertext, fingerprint)
VALUES ($1, $2, $3, $4, $5);

-- name: destination_secrets_expire_previous
-- A rotation: the current secrets get an end ($2 seconds from now), the new one has none.
UPDATE destination_secrets SET expires_at = now() + make_interval(secs => $2)
WHERE destination_id = $1 AND (expires_at IS NULL OR expires_at > now() + make_interval(secs => $2));

-- name: destinations_list
-- A tenant's destinations, or one of them ($2), with their signing secrets' fingerprints.
SELECT d.*, d.filter::text AS filter_json,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'fingerprint', s.fingerprint, 'created_at', s.created_at,
                     'expires_at', s.expires_at) ORDER BY s.created_at)
                 FROM destination_secrets s
                 WHERE s.destination_id = d.id AND (s.expires_at IS NULL OR s.expires_at > now())),
                '[]')::text AS secrets_json
FROM destinations d
WHERE d.tenant_id = $1 AND ($2::uuid IS NULL OR d.id = $2)
  AND ($2::uuid IS NOT NULL OR d.kind = 'events')  -- the operational endpoint apart
ORDER BY d.created_at, d.id;

-- name: operational_endpoint_id
SELECT id FROM destinations WHERE tenant_id = $1 AND kind = 'operational';

-- name: destination_update
-- NULL leaves a field as it is ($14: a list of fields to set to NULL). Enabling again clears the
-- reason it was disabled and closes its circuit.
UPDATE destinations SET
    name = CASE WHEN 'name' = ANY($14) THEN NULL ELSE coalesce($3, name) END,
    url = coalesce($4, url),
    enabled = coalesce($5, enabled),
    disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END,
    circuit = CASE WHEN $5 THEN 'closed' ELSE circuit END,
    consecutive_failures = CASE WHEN $5 THEN 0 ELSE consecutive_failures END,
    failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END,
    circuit_opened_at = CASE WHEN $5 THEN NULL ELSE circuit_opened_at END,
    filter = coalesce($6::jsonb, filter),
    header_names = coalesce($7, header_names),
    headers_nonce = CASE WHEN $7 IS NULL THEN headers_nonce ELSE $8 END,
    headers_ciphertext = CASE WHEN $7 IS NULL THEN headers_ciphertext ELSE $9 END,
    payload = coalesce($10, payload),
    timeout_ms = coalesce($11, timeout_ms),
    rate_limit_per_second = CASE WHEN 'rate_limit_per_second' = ANY($14) THEN NULL
                                 ELSE coalesce($12, rate_limit_per_second) END,
    max_concurrency = CASE WHEN 'max_concurrency' = ANY($14) THEN NULL
                           ELSE coalesce($13, max_concurrency) END,
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING id;

-- name: destination_pause
-- Paused ($3 true) or resumed; a resume wakes the relay for the deliveries it held.
WITH changed AS (
    UPDATE destinations SET paused = $3, updated_at = now()
    WHERE tenant_id = $1 AND id = $2 RETURNING id
),
woken AS (
    SELECT pg_notify('relayforge_deliveries', '') FROM changed WHERE NOT $3
)
SELECT id FROM changed WHERE (SELECT count(*) FROM woken) >= 0;

-- name: destination_test_request
-- What a test event to a destination needs: what delivery_requests gives, without a job.
SELECT r.*, d.tenant_id
FROM destinations d JOIN destination_requests r ON r.destination_id = d.id
WHERE d.tenant_id = $1 AND d.id = $2;

-- name: destination_delete
DELETE FROM destinations WHERE tenant_id = $1 AND id = $2 RETURNING id;

-- name: destination_gate
-- Before a delivery's attempt $3: is the destination enabled, and may an attempt go out now?
-- While its circuit is open one probe goes out every $2 seconds, sent by a waiting delivery that
-- has spent the fewest attempts (else one delivery could spend all its attempts on probes while
-- the others spend none); the others wait until then without spending an attempt. Deliveries
-- not due, or untouched for two probe intervals (a lost message), don't hold the probe back.
WITH probe AS (
    UPDATE destinations d SET next_probe_at = now() + make_interval(secs => $2)
    WHERE d.id = $1 AND d.enabled AND d.circuit = 'open' AND d.next_probe_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM deliveries x
          WHERE x.destination_id = d.id AND x.status IN ('pending', 'queued', 'retrying')
            AND x.attempts < $3 - 1 AND x.available_at <= now()
            AND x.updated_at > now() - make_interval(secs => 2 * $2))
    RETURNING d.id
)
SELECT d.enabled, d.paused, d.disabled_reason, d.circuit, d.max_concurrency,
       d.rate_limit_per_second,
       -- a delivery that the probe passed over looks again soon, in case its peer never comes
       CASE WHEN d.next_probe_at > now() THEN d.next_probe_at
            ELSE now() + make_interval(secs => least($2 / 4, 1)) END AS wait_until,
       EXISTS (SELECT 1 FROM probe) AS probe
FROM destinations d WHERE d.id = $1;

-- name: destination_failed
-- One more consecutive failure: at $2 the circuit opens (first probe after $3 seconds), which
-- tells the tenant's operational endpoint ($5: its attempts); the caller disables a
-- destination failing for longer than $4 hours.
UPDATE destinations d
SET consecutive_failures = d.consecutive_failures + 1,
    failing_since = coalesce(d.failing_since, now()),
    circuit = CASE WHEN d.consecutive_failures + 1 >= $2 THEN 'open' ELSE d.circuit END,
    circuit_opened_at = CASE WHEN d.consecutive_failures + 1 >= $2
                             THEN coalesce(d.circuit_opened_at, now()) END,
    next_probe_at = CASE WHEN d.consecutive_failures + 1 >= $2 AND d.circuit = 'closed'
                         THEN now() + make_interval(secs => $3) ELSE d.next_probe_at END
WHERE d.id = $1
RETURNING d.circuit, d.consecutive_failures,
          coalesce(d.failing_since < now() - make_interval(secs => $4::float8 * 3600), false) AS failing_too_long,
          CASE WHEN d.circuit = 'open' AND d.consecutive_failures = $2  -- it opened just now
               THEN relayforge_operational_event(d.id, 'destination.circuit_opened',
                    jsonb_build_object('destination_id', d.id, 'url', d.url,
                                       'consecutive_failures', d.consecutive_failures), $5)
          END AS told;

-- name: destination_disable
-- Disabled (410 Gone, or failing too long): its waiting deliveries are dead-lettered with why.
-- Disabling an enabled destination tells the tenant's operational endpoint ($3: its attempts).
WITH before AS (
    SELECT enabled FROM destinations WHERE id = $1 FOR NO KEY UPDATE
),
d AS (
    UPDATE destinations x SET enabled = false, disabled_reason = $2::text, updated_at = now()
    FROM before WHERE x.id = $1
    RETURNING x.id, CASE WHEN before.enabled THEN relayforge_operational_event(
        x.id, 'destination.disabled', jsonb_build_object(
            'destination_id', x.id, 'url', x.url, 'reason', $2::text), $3) END AS told
)
UPDATE deliveries x
SET status = 'dead_lettered', last_error = 'destination disabled: ' || $2, updated_at = now(),
    claimed_until = NULL
FROM d
WHERE x.destination_id = d.id AND x.status IN ('pending', 'queued', 'retrying')
RETURNING x.id;

-- ============================================================================== deliveries

-- name: deliveries_fan_out
-- One delivery per matching destination of a job's event, for the jobs a consumer started at
-- once; fan-out runs on every attempt of a job, and the unique index keeps it to one. The
-- consumer attempts some itself ($6): 'started' ones at once (their first attempt begins here,
-- leased for $8 seconds, and what their requests need comes back), 'claimed' ones when it has
-- room (the relay leaves them alone for $8 seconds unless the consumer dies); 'left' ones go
-- through the relay. A started one's request is made of its destination's parts, returned here,
-- and its job's event and body, which the consumer holds.
WITH made AS (
    INSERT INTO deliveries (id, job_id, destination_id, tenant_id, max_attempts, headers,
                            claimed_until, status, attempts, lease_expires_at)
    SELECT id, job_id, destination_id, tenant_id, $7, headers::jsonb,
           CASE WHEN take = 'claimed' THEN now() + make_interval(secs => $8) END,
           CASE WHEN take = 'started' THEN 'processing' ELSE 'pending' END,
           CASE WHEN take = 'started' THEN 1 ELSE 0 END,
           CASE WHEN take = 'started' THEN now() + make_interval(secs => $8) END
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[])
        AS m(id, job_id, destination_id, tenant_id, headers, take)
    ORDER BY job_id  -- each row's foreign key locks its job: in id order, as everywhere
    ON CONFLICT (job_id, destination_id) WHERE NOT redelivery DO NOTHING
    RETURNING *
)
SELECT s.id, s.destination_id, s.claimed_until IS NOT NULL AS claimed,
       s.status = 'processing' AS started, s.job_id, s.tenant_id, s.attempts, s.max_attempts,
       s.headers::text AS headers, r.url, r.payload, r.timeout_ms, r.headers_nonce,
       r.headers_ciphertext, r.max_concurrency, r.rate_limit_per_second, r.secret_nonces,
       r.secret_ciphertexts
FROM made s
LEFT JOIN destination_requests r
    ON s.status = 'processing' AND r.destination_id = s.destination_id;

-- name: deliveries_redeliver
-- New deliveries of an earlier event (history replayed into a destination, e.g. one created
-- later); each is a delivery of its own, next to any earlier one.
INSERT INTO deliveries (id, job_id, destination_id, tenant_id, max_attempts, headers, redelivery)
SELECT m.id, j.id, m.destination_id, j.tenant_id, $4,
       jsonb_strip_nulls(j.trace_context || jsonb_build_object('correlation_id', j.correlation_id)),
       true
FROM unnest($1::uuid[], $3::uuid[]) AS m(id, destination_id), jobs j
WHERE j.id = $2
RETURNING id, destination_id;

-- name: deliveries_claim
-- For the relay: deliveries whose next message is due, leased (and owned) as outbox rows are,
-- in the order they fell due (oldest first: an UPDATE's RETURNING has no order of its own).
-- A paused destination's deliveries wait, in the order they will go out when it resumes.
WITH claimed AS (
    UPDATE deliveries x
    SET claimed_until = now() + make_interval(secs => $2), claimed_by = $3
    FROM (
        SELECT w.id FROM deliveries w
        WHERE w.status IN ('pending', 'retrying') AND w.available_at <= now()
          AND (w.claimed_until IS NULL OR w.claimed_until < now())
          AND NOT EXISTS (SELECT 1 FROM destinations d WHERE d.id = w.destination_id AND d.paused)
        ORDER BY w.available_at, w.id
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE x.id = due.id
    RETURNING x.id, x.destination_id, x.tenant_id, x.attempts + 1 AS attempt,
              x.headers::text AS headers, x.available_at
)
SELECT id, destination_id, tenant_id, attempt, headers FROM claimed ORDER BY available_at, id;

-- name: deliveries_mark_queued
-- Confirmed: queued, unless the consumer already took that message (it beat the confirm): a
-- start or a deferral clears the relay's claim, and then the delivery keeps its newer state.
UPDATE deliveries x
SET status = 'queued', claimed_until = NULL, updated_at = now()
FROM unnest($1::uuid[], $2::int[]) AS m(id, attempt)
WHERE x.id = m.id AND x.attempts = m.attempt - 1 AND x.status IN ('pending', 'retrying')
  AND x.claimed_until IS NOT NULL;

-- name: delivery_release
-- Not published (the broker is down): claimable again after $2 seconds.
UPDATE deliveries SET claimed_until = now() + make_interval(secs => $2) WHERE id = ANY($1::uuid[]);

-- name: delivery_refuse
-- Its destination is disabled: the delivery is dead-lettered without an attempt.
UPDATE deliveries
SET status = 'dead_lettered', last_error = $3, claimed_until = NULL, updated_at = now()
WHERE id = $1 AND attempts = $2 - 1 AND status IN ('pending', 'queued', 'retrying')
RETURNING id;

-- name: delivery_hold
-- Its destination is paused: the same attempt waits, unclaimed and in its place, for the resume.
UPDATE deliveries
SET status = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END, claimed_until = NULL,
    updated_at = now()
WHERE id = $1 AND attempts = $2 - 1 AND status IN ('pending', 'queued', 'retrying')
RETURNING id;

-- name: delivery_defer
-- Not now (circuit open, destination busy or over its rate): the same attempt goes out later,
-- without spending one.
UPDATE deliveries
SET status = 'retrying', available_at = $3, claimed_until = NULL, updated_at = now()
WHERE id = $1 AND attempts = $2 - 1 AND status IN ('pending', 'queued', 'retrying')
RETURNING id;

-- name: deliveries_start
-- The only way into `processing`, as for jobs: exactly each delivery's next attempt ($1 ids,
-- $2 attempts, as many as a consumer starts at once; rows locked in id order). With $4 only
-- where the destination is enabled, not paused and its circuit closed (the common case,
-- without a gate); the others are left for the gate. Returns all the requests need: the destination and its
-- limits, the event, the original body and its content type.
WITH locked AS (
    SELECT x.id, m.attempt
    FROM deliveries x JOIN unnest($1::uuid[], $2::int[]) AS m(id, attempt) ON m.id = x.id
    ORDER BY x.id FOR UPDATE OF x
),
started AS (
    UPDATE deliveries x
    SET status = 'processing', attempts = x.attempts + 1, updated_at = now(),
        claimed_until = NULL, lease_expires_at = now() + make_interval(secs => $3)
    FROM locked m, destinations d
    WHERE x.id = m.id AND x.attempts = m.attempt - 1
      AND x.status IN ('pending', 'queued', 'retrying') AND x.attempts < x.max_attempts
      AND d.id = x.destination_id
      AND (NOT $4 OR (d.enabled AND d.circuit = 'closed' AND NOT d.paused))
    RETURNING x.*
)
SELECT s.id, s.job_id, s.destination_id, s.tenant_id, s.attempts, s.max_attempts,
       s.headers::text AS headers, r.url, r.payload, r.timeout_ms, r.headers_nonce,
       r.headers_ciphertext, r.max_concurrency, r.rate_limit_per_second, r.source,
       r.event_type, r.event, r.body, r.content_type, r.secret_nonces, r.secret_ciphertexts,
       r.provider_event_id, r.occurred_at_unix, r.data_path
FROM started s
JOIN delivery_requests r ON r.destination_id = s.destination_id AND r.job_id = s.job_id;

-- name: delivery_state
SELECT status, attempts, max_attempts FROM deliveries WHERE id = $1;

-- name: deliveries_finish
-- Attempts' outcomes and their log entries, together, for as many as a consumer finished at
-- once. Each: succeeded | retrying | dead_lettered; a retry goes out after its delay. An
-- outcome stands while no later attempt has started. A success also resets its destination's
-- failure count and closes its circuit. Rows are locked in id order, as everywhere.
WITH m AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::float8[],
                         $6::timestamptz[], $7::float8[], $8::int[], $9::text[])
        AS m(id, attempt, status, error, delay, started_at, duration_ms, status_code,
             response_body)
),
locked AS (  -- with each outcome: the update joins it alone (see jobs_start)
    SELECT m.* FROM deliveries x JOIN m ON m.id = x.id ORDER BY x.id FOR UPDATE OF x
),
moved AS (
    UPDATE deliveries x
    SET status = m.status, last_error = m.error, lease_expires_at = NULL, updated_at = now(),
        available_at = now() + make_interval(secs => m.delay)
    FROM locked m
    WHERE x.id = m.id AND x.attempts = m.attempt
      AND x.status = 'processing'
    RETURNING x.id, x.destination_id, x.job_id, x.attempts, m.status, m.error
),
logged AS (  -- runs although nothing reads it, as every data-modifying CTE does
    INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code,
                                   error, response_body)
    SELECT m.id, m.attempt, m.started_at, m.duration_ms, m.status_code, m.error,
           m.response_body
    FROM m JOIN moved USING (id)
    ON CONFLICT (delivery_id, attempt) DO NOTHING
),
recovering AS (
    SELECT d.id FROM destinations d
    WHERE d.id IN (SELECT destination_id FROM moved WHERE status = 'succeeded')
      AND (d.consecutive_failures > 0 OR d.circuit = 'open')
    ORDER BY d.id FOR NO KEY UPDATE  -- (an operational event's delivery takes a key share)
),
recovered AS (
    UPDATE destinations d
    SET consecutive_failures = 0, failing_since = NULL, circuit = 'closed',
        circuit_opened_at = NULL, next_probe_at = NULL
    FROM recovering r WHERE d.id = r.id
    RETURNING d.id
)
SELECT (SELECT array_agg(id) FROM recovered) AS recovered,
       -- each dead letter tells the tenant's operational endpoint ($10: its attempts)
       (SELECT count(relayforge_operational_event(destination_id, 'delivery.dead_lettered',
                    jsonb_build_object('delivery_id', id, 'destination_id', destination_id,
                                       'job_id', job_id, 'attempts', attempts,
                                       'last_error', error), $10))
        FROM moved WHERE status = 'dead_lettered') AS told;

-- name: deliveries_recover_expired
-- Deliveries whose consumer died mid-attempt: the attempt counts; retried or dead-lettered.
UPDATE deliveries x
SET status = CASE WHEN x.attempts >= x.max_attempts THEN 'dead_lettered' ELSE 'retrying' END,
    last_error = 'lease expired: the consumer of attempt ' || x.attempts || ' stopped',
    lease_expires_at = NULL, available_at = now(), updated_at = now()
FROM (
    SELECT id FROM deliveries
    WHERE status = 'processing' AND lease_expires_at < now()
    ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
) e
WHERE x.id = e.id
RETURNING x.id, CASE WHEN x.status = 'dead_lettered' THEN relayforge_operational_event(
    x.destination_id, 'delivery.dead_lettered', jsonb_build_object(
        'delivery_id', x.id, 'destination_id', x.destination_id, 'job_id', x.job_id,
        'attempts', x.attempts, 'last_error', x.last_error), $2) END AS told;

-- name: deliveries_republish_stranded
-- Queued for longer than $1 seconds: the message was lost; the same attempt is published again.
UPDATE deliveries x SET status = 'retrying', available_at = now(), updated_at = now()
FROM (
    SELECT id FROM deliveries
    WHERE status = 'queued' AND updated_at < now() - make_interval(secs => $1)
    ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED
) s
WHERE x.id = s.id
RETURNING x.id;

-- name: delivery_get
SELECT x.id, x.job_id, x.destination_id, x.tenant_id, x.status, x.attempts, x.max_attempts,
       x.last_error, x.redelivery, x.available_at, x.created_at, x.updated_at
FROM deliveries x WHERE x.id = $1;

-- name: delivery_attempts
SELECT attempt, started_at, duration_ms, status_code, error, response_body
FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt;

-- name: deliveries_list
-- Newest first; the cursor is the last id of the previous page (ids are time-ordered).
SELECT x.id, x.job_id, x.destination_id, x.tenant_id, x.status, x.attempts, x.max_attempts,
       x.last_error, x.redelivery, x.available_at, x.created_at, x.updated_at
FROM deliveries x
WHERE ($2::uuid IS NULL OR x.tenant_id = $2)
  AND ($3::uuid IS NULL OR x.destination_id = $3)
  AND ($4::uuid IS NULL OR x.job_id = $4)
  AND ($5::text IS NULL OR x.status = $5)
  AND ($6::uuid IS NULL OR x.id < $6)
ORDER BY x.id DESC
LIMIT $1;

-- name: deliveries_reprocess
-- Dead-lettered deliveries back to pending, with WORKER__MAX_ATTEMPTS ($5) more attempts.
UPDATE deliveries x
SET status = 'pending', max_attempts = x.attempts + $5, last_error = NULL, available_at = now(),
    claimed_until = NULL, updated_at = now()
FROM (
    SELECT id FROM deliveries
    WHERE status = 'dead_lettered'
      AND ($1::uuid IS NULL OR id = $1)
      AND ($2::uuid IS NULL OR tenant_id = $2)
      AND ($3::uuid IS NULL OR destination_id = $3)
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED
) r
WHERE x.id = r.id
RETURNING x.id;

-- name: deliveries_recover
-- After an incident: a destination's deliveries that failed at or after $2 (dead-lettered, or
-- waiting for a later retry) go out again now, oldest first; dead-lettered ones get
-- WORKER__MAX_ATTEMPTS ($3) more attempts. A batch of $4; none is taken twice (a recovered
-- one is neither dead-lettered nor waiting any more).
UPDATE deliveries x
SET status = CASE WHEN x.status = 'dead_lettered' THEN 'pending' ELSE x.status END,
    max_attempts = CASE WHEN x.status = 'dead_lettered' THEN x.attempts + $3
                        ELSE x.max_attempts END,
    last_error = CASE WHEN x.status = 'dead_lettered' THEN NULL ELSE x.last_error END,
    available_at = now(), claimed_until = NULL, updated_at = now()
FROM (
    SELECT id FROM deliveries
    WHERE destination_id = $1 AND updated_at >= $2
      AND (status = 'dead_lettered' OR (status = 'retrying' AND available_at > now()))
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED
) r
WHERE x.id = r.id
RETURNING x.id;

-- name: deliveries_lag
-- For /metrics: open circuits, deliveries waiting by state, the oldest waiting one.
SELECT (SELECT count(*) FROM destinations WHERE enabled AND circuit = 'open') AS open_circuits,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'retrying') AS retrying,
       count(*) FILTER (WHERE status = 'dead_lettered') AS dead_lettered,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE status IN ('pending', 'queued', 'retrying')))::float8 AS oldest_waiting_age
FROM deliveries WHERE status IN ('pending', 'queued', 'processing', 'retrying', 'dead_lettered');

-- ============================================================================ tenant sources

-- name: tenant_source_put
-- Returns whether it was created (true) or replaced (false).
INSERT INTO tenant_sources (tenant_id, name, definition) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (tenant_id, name) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now()
RETURNING (xmax = 0) AS created;

-- name: tenant_source_get
SELECT name, definition::text AS definition, created_at, updated_at
FROM tenant_sources WHERE tenant_id = $1 AND name = $2;

-- name: tenant_sources_list
SELECT name, definition::text AS definition, created_at, updated_at
FROM tenant_sources WHERE tenant_id = $1 ORDER BY name;

-- name: tenant_source_delete
DELETE FROM tenant_sources WHERE tenant_id = $1 AND name = $2 RETURNING name;

-- ================================================================================= console

-- name: console_session_insert
-- A new session; expired ones are removed on the way (sessions are few).
WITH pruned AS (DELETE FROM console_sessions WHERE expires_at < now())
INSERT INTO console_sessions (token_hash, key_hash, csrf_token, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4));

-- name: console_session_get
SELECT key_hash, csrf_token AS csrf FROM console_sessions
WHERE token_hash = $1 AND expires_at > now();

-- name: console_session_delete
DELETE FROM console_sessions WHERE token_hash = $1;

-- name: inbox_per_minute
-- Accepted and refused webhooks per minute over the last $1 minutes, oldest first, every minute
-- present (zero when none). The id bounds the window as in admin_inbox_counts.
SELECT m.minute,
       count(i.id) FILTER (WHERE i.accepted) AS accepted,
       count(i.id) FILTER (WHERE NOT i.accepted) AS refused
FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1),
                     date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN webhook_inbox i
       ON i.received_at >= m.minute AND i.received_at < m.minute + interval '1 minute'
      AND i.id >= relayforge_uuid7_floor(date_trunc('minute', now())
                                         - make_interval(mins => $1 - 1) - interval '5 minutes')
GROUP BY m.minute ORDER BY m.minute;

-- name: inbox_for_job
-- the first $2 bytes of each body only: twenty 18 MiB duplicates must not all come back whole.
-- The job's first delivery is found from the job, its repeats by webhook_inbox_repeats.
SELECT i.id, i.received_at, m.request_id, i.accepted, i.rejection_code,
       i.headers::text AS headers, substring(i.body FROM 1 FOR $2) AS body_preview,
       octet_length(i.body) AS body_size
FROM webhook_inbox i, relayforge_inbox_metadata(i) m
WHERE i.id IN (SELECT first_inbox_id FROM jobs WHERE id = $1
               UNION ALL  -- a row written before 0031 is in both: IN reads it once
               SELECT r.id FROM webhook_inbox r WHERE r.job_id = $1 AND r.source IS NOT NULL)
ORDER BY i.received_at, i.id LIMIT 50;

-- name: inbox_body_size
SELECT octet_length(body) FROM webhook_inbox WHERE id = $1;

-- name: inbox_body_chunk
-- $2 is 1-based, as substring's FROM is
SELECT substring(body FROM $2 FOR $3) FROM webhook_inbox WHERE id = $1;

-- name: job_context
SELECT trace_context ->> 'traceparent' AS traceparent, correlation_id FROM jobs WHERE id = $1;

-- name: job_attempts_log
SELECT attempt, error, finished_at FROM job_attempts WHERE job_id = $1 ORDER BY attempt;

-- name: jobs_dead_lettered_count
SELECT count(*) FROM jobs
WHERE status = 'dead_lettered' AND ($1::uuid IS NULL OR tenant_id = $1)
  AND ($2::text IS NULL OR source = $2) AND ($3::text IS NULL OR event_type = $3);

-- name: destination_recent_stats
-- Each destination's attempts of the last 24 hours: how many, the share that succeeded, the
-- mean duration.
SELECT x.destination_id, count(*) AS attempts,
       avg(CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1.0 ELSE 0.0 END)::float8
           AS success_ratio,
       avg(a.duration_ms)::float8 AS mean_ms
FROM delivery_attempts a JOIN deliveries x ON x.id = a.delivery_id
WHERE x.tenant_id = $1 AND a.started_at > now() - interval '24 hours'
GROUP BY x.destination_id;

-- name: deliveries_dead_lettered_count
SELECT count(*) FROM deliveries
WHERE status = 'dead_lettered' AND ($1::uuid IS NULL OR tenant_id = $1)
  AND ($2::uuid IS NULL OR destination_id = $2);

-- name: tenants_known
-- For the console's tenant picker: tenants with destinations, sources or secrets, and those
-- that sent webhooks today or yesterday (the quota ledger has a small row per tenant and day).
SELECT tenant_id FROM (
    SELECT tenant_id FROM destinations
    UNION SELECT tenant_id FROM tenant_sources
    UNION SELECT tenant_id FROM tenant_provider_secrets
    UNION SELECT tenant_id FROM tenant_daily_quota_usage
          WHERE quota_date >= (now() AT TIME ZONE 'UTC')::date - 1
) t ORDER BY tenant_id LIMIT $1;

-- name: audit_for_job
-- Who reprocessed a job: by its id, or in a bulk reprocess that named it.
SELECT id, key_id, key_source, role, action, target, detail::text AS detail, created_at
FROM admin_audit_log
WHERE target = $1::text OR (action = 'job.reprocess_bulk' AND detail -> 'job_ids' ? $1::text)
ORDER BY id;

-- name: audit_list
SELECT id, key_id, key_source, role, action, target, detail::text AS detail, created_at
FROM admin_audit_log WHERE ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $1;
