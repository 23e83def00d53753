-- Before history tables are partitioned (0025), each gets a bound on its partition key that
-- every row it holds, and every row written until then, stays under: a week from today (UTC).
-- The CHECK is added NOT VALID here (a moment), proved by 0024 while writes go on, and then
-- lets 0025 attach the table as its first partition without reading a row. An empty table
-- needs none (it gives way to day partitions); a table holding keys beyond the bound (ids that
-- are not version 7) gets none and stays open-ended.

CREATE SCHEMA partitions;

-- What each history table was given: its bound, as a day (NULL: open-ended).
CREATE TABLE partitions.adoptions (
    table_name text PRIMARY KEY,
    until_day  date
);

-- The first UUIDv7 of a moment's millisecond: the partition bound of a uuid key.
CREATE FUNCTION relayforge_uuid7_floor(p_at timestamptz) RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM p_at) * 1000)::bigint), 12, '0')
            || repeat('0', 20))::uuid
$$;

-- The moment a UUIDv7 was made (NULL beyond any date: not a version-7 id).
CREATE FUNCTION relayforge_uuid7_time(p_id uuid) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN ms < 253402300800000 THEN to_timestamp(ms / 1000.0) END
    FROM (SELECT ('x' || lpad(left(replace(p_id::text, '-', ''), 12), 16, '0'))::bit(64)::bigint
          AS ms) m
$$;


-- Gives p_table (partitioned next by p_key) its bound, as above.
CREATE FUNCTION relayforge_partition_prepare(p_table text, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_until date := (now() AT TIME ZONE 'UTC')::date + 7;
    v_uuid boolean := (SELECT atttypid = 'uuid'::regtype FROM pg_attribute
                       WHERE attrelid = p_table::regclass AND attname = p_key);
    v_bound text;
    v_beyond boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', p_table) INTO v_beyond;
    IF NOT v_beyond THEN
        RETURN;  -- empty
    END IF;
    v_bound := CASE WHEN v_uuid
                    THEN quote_literal(relayforge_uuid7_floor(v_until::timestamp AT TIME ZONE 'UTC'))
                    ELSE quote_literal(v_until::timestamp AT TIME ZONE 'UTC') END;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %s)', p_table, p_key, v_bound)
        INTO v_beyond;
    IF v_beyond THEN
        RAISE NOTICE '% holds keys beyond %: it stays one open-ended partition', p_table, v_until;
        INSERT INTO partitions.adoptions VALUES (p_table, NULL);
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I < %s) NOT VALID',
                   p_table, p_table || '_before_partitioning', p_key, v_bound);
    INSERT INTO partitions.adoptions VALUES (p_table, v_until);
END $$;

SELECT relayforge_partition_prepare('webhook_inbox', 'id');
SELECT relayforge_partition_prepare('admin_audit_log', 'created_at');
