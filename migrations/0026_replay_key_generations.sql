-- Replay keys (stripe_event_idempotency) retire by DROP too, and a replay is still refused
-- across a partition boundary. A key is claimed in a generation: a span of N days (N is
-- RETENTION__INBOX_DAYS, given by the caller), one partition each, named
-- <table>_<first day>. A key is a replay while its generation or the one before holds it, so
-- it is refused for N to 2N days, and a generation is dropped N days after its last day. Near
-- a generation's end a key is claimed in the next one too: two claims on either side of the
-- boundary meet in one unique index (relayforge_generation_claim_days).
--
-- The existing table becomes the first partition as it is (holding everything before
-- tomorrow): its rows all get the generation of today (a column with a constant default: no
-- rewrite) and a unique index with it, built once (the moment ingest of Stripe events waits).
-- An empty one gives way to the generation of today, for RETENTION__INBOX_DAYS' default (30);
-- each process makes the ones it needs from then on.

-- The first day of the generation of N days (counted from 1970-01-01) that holds p_day.
CREATE FUNCTION relayforge_generation(p_day date, p_span integer) RETURNS date
LANGUAGE sql IMMUTABLE AS $$
    SELECT date '1970-01-01' + ((p_day - date '1970-01-01') / p_span) * p_span
$$;

-- The generations a key claimed at p_at goes into: its own, and the next one as well when
-- p_at is within ten minutes of its end (no ingest transaction lasts that long).
CREATE FUNCTION relayforge_generation_claim_days(p_at timestamptz, p_span integer) RETURNS date[]
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_at >= ((g + p_span)::timestamp AT TIME ZONE 'UTC') - interval '10 minutes'
                THEN ARRAY[g, g + p_span] ELSE ARRAY[g] END
    FROM (SELECT relayforge_generation((p_at AT TIME ZONE 'UTC')::date, p_span) AS g) s
$$;

-- The partition of p_parent (partitioned by a date) for the generation of p_span days that holds
-- p_day, unless a partition covers p_day already; where a generation of another span (before a
-- change of setting) covers part of it, the new one takes the rest. True when made.
CREATE FUNCTION relayforge_ensure_generation(p_parent regclass, p_day date, p_span integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_from date := relayforge_generation(p_day, p_span);
    v_to date := relayforge_generation(p_day, p_span) + p_span;
    v_bounds record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('relayforge.partitions'));
    FOR v_bounds IN
        SELECT relayforge_bound_time(substring(b FROM 'FROM \(''([^'']*)''\)')) AS lo,
               relayforge_bound_time(substring(b FROM 'TO \(''([^'']*)''\)')) AS hi,
               b ~ 'FROM \(MINVALUE\)' AS open_lo, b ~ 'TO \(MAXVALUE\)' AS open_hi
        FROM (SELECT pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = p_parent) s
    LOOP
        IF (v_bounds.open_lo OR (v_bounds.lo AT TIME ZONE 'UTC')::date <= p_day)
           AND (v_bounds.open_hi OR (v_bounds.hi AT TIME ZONE 'UTC')::date > p_day) THEN
            RETURN false;  -- covered
        END IF;
        IF NOT v_bounds.open_hi AND (v_bounds.hi AT TIME ZONE 'UTC')::date <= p_day THEN
            v_from := greatest(v_from, (v_bounds.hi AT TIME ZONE 'UTC')::date);
        END IF;
        IF NOT v_bounds.open_lo AND (v_bounds.lo AT TIME ZONE 'UTC')::date > p_day THEN
            v_to := least(v_to, (v_bounds.lo AT TIME ZONE 'UTC')::date);
        END IF;
    END LOOP;
    EXECUTE format('CREATE TABLE partitions.%I (LIKE %s INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS INCLUDING STORAGE)',
                   (SELECT relname FROM pg_class WHERE oid = p_parent) || '_'
                   || to_char(v_from, 'YYYYMMDD'), p_parent);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION partitions.%I FOR VALUES FROM (%L) TO (%L)',
                   p_parent, (SELECT relname FROM pg_class WHERE oid = p_parent) || '_'
                   || to_char(v_from, 'YYYYMMDD'), v_from, v_to);
    RETURN true;
END $$;

-- Day partitions are for tables partitioned by an id or a moment; generations are made apart.
CREATE OR REPLACE FUNCTION relayforge_ensure_partitions(p_from date, p_to date)
RETURNS TABLE (parent text, day date) LANGUAGE plpgsql AS $$
DECLARE
    v_parent regclass;
    v_day date;
BEGIN
    FOR v_parent IN SELECT p.partrelid::regclass FROM pg_partitioned_table p
                    JOIN pg_class c ON c.oid = p.partrelid
                    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                    WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition
                      AND a.atttypid <> 'date'::regtype
                    ORDER BY c.relname LOOP
        FOR v_day IN SELECT d::date FROM generate_series(p_from, p_to, interval '1 day') d LOOP
            IF relayforge_ensure_partition(v_parent, v_day) THEN
                parent := v_parent::text;
                day := v_day;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END $$;

-- A claim that lost a race across a generation boundary: its transaction is tried again.
CREATE FUNCTION relayforge_retry(p_why text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'try again: %', p_why USING ERRCODE = 'serialization_failure';
END $$;

------------------------------------------------------------------- stripe_event_idempotency

DO $$
BEGIN
    EXECUTE format('ALTER TABLE stripe_event_idempotency ADD COLUMN generation date NOT NULL '
                   'DEFAULT %L', (now() AT TIME ZONE 'UTC')::date);
END $$;
ALTER TABLE stripe_event_idempotency ALTER COLUMN generation DROP DEFAULT;
SELECT relayforge_partition_begin('stripe_event_idempotency', 'generation');
ALTER TABLE stripe_event_idempotency ADD PRIMARY KEY (tenant_id, source, event_id, generation);
ALTER TABLE partitions.stripe_event_idempotency_old
    DROP CONSTRAINT stripe_event_idempotency_pkey;
DROP INDEX partitions.stripe_event_idempotency_created;  -- retention no longer deletes by age
DO $$
DECLARE
    v_until date := (now() AT TIME ZONE 'UTC')::date + 1;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM partitions.stripe_event_idempotency_old) THEN
        DROP TABLE partitions.stripe_event_idempotency_old;
    ELSE
        EXECUTE format('ALTER TABLE partitions.stripe_event_idempotency_old RENAME TO %I',
                       'stripe_event_idempotency_before_' || to_char(v_until, 'YYYYMMDD'));
        EXECUTE format('ALTER TABLE stripe_event_idempotency ATTACH PARTITION partitions.%I '
                       'FOR VALUES FROM (MINVALUE) TO (%L)',
                       'stripe_event_idempotency_before_' || to_char(v_until, 'YYYYMMDD'),
                       v_until);
    END IF;
    PERFORM relayforge_ensure_generation('stripe_event_idempotency',
                                         (now() AT TIME ZONE 'UTC')::date, 30);
END $$;
