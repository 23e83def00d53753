-- History retires by dropping whole day partitions (UTC days), never by bulk DELETEs. This
-- migration partitions webhook_inbox by id (a version-7 UUID begins with its millisecond, so a
-- lookup by id still reads one partition) and admin_audit_log by created_at; the helpers serve
-- the other tables that grow with traffic too. Partitions live in the schema `partitions`,
-- named <table>_<yyyymmdd>; there is no DEFAULT partition: a row with no partition is refused
-- and the writer creates its partition on demand (relayforge_ensure_partitions).
--
-- An existing table is not copied: it becomes the first partition as it is
-- (partitions.<table>_before_<day>), holding every row before the bound 0023 gave it and 0024
-- proved without stopping writes, so attaching it reads no row. An empty one gives way to day
-- partitions.

-- The start of UTC day `p_day` as a bound of p_parent's partition key, as an SQL literal.
CREATE FUNCTION relayforge_partition_bound(p_parent regclass, p_day date) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN a.atttypid = 'uuid'::regtype
                THEN quote_literal(relayforge_uuid7_floor(p_day::timestamp AT TIME ZONE 'UTC'))
                ELSE quote_literal(p_day::timestamp AT TIME ZONE 'UTC') END
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = p_parent
$$;

-- The moment a partition bound stands for (pg_get_expr's literal: a UUIDv7 or a timestamptz);
-- NULL for MINVALUE and MAXVALUE.
CREATE FUNCTION relayforge_bound_time(p_literal text) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_literal ~ '^[0-9a-f]{8}-' THEN relayforge_uuid7_time(p_literal::uuid)
                ELSE p_literal::timestamptz END
$$;

-- When p_parent's oldest row was written (by its partition key), for the retention gauge.
CREATE FUNCTION relayforge_oldest_row(p_parent regclass) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key text;
    v_uuid boolean;
    v_at timestamptz;
BEGIN
    SELECT a.attname, a.atttypid = 'uuid'::regtype INTO v_key, v_uuid
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = p_parent;
    EXECUTE format(CASE WHEN v_uuid THEN 'SELECT relayforge_uuid7_time(%1$I) FROM %2$s '
                                         'ORDER BY %1$I LIMIT 1'
                        ELSE 'SELECT min(%1$I) FROM %2$s' END, v_key, p_parent) INTO v_at;
    RETURN v_at;
END $$;

-- The partition of p_parent for UTC day p_day, unless one exists or another partition covers
-- the day (the first one may): true when made. Made apart, then attached: that locks the parent
-- against other DDL only, never against writes. One maker at a time (several processes ensure).
CREATE FUNCTION relayforge_ensure_partition(p_parent regclass, p_day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_name text := (SELECT relname FROM pg_class WHERE oid = p_parent) || '_'
                   || to_char(p_day, 'YYYYMMDD');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('relayforge.partitions'));
    IF to_regclass(format('partitions.%I', v_name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE partitions.%I (LIKE %s INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS INCLUDING STORAGE)', v_name, p_parent);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION partitions.%I FOR VALUES FROM (%s) TO (%s)',
                       p_parent, v_name, relayforge_partition_bound(p_parent, p_day),
                       relayforge_partition_bound(p_parent, p_day + 1));
    EXCEPTION WHEN invalid_object_definition THEN  -- "would overlap": the day is covered
        RETURN false;
    END;
    RETURN true;
END $$;

-- Every partitioned table's partitions for the days p_from..p_to: the ones made. Tables
-- partitioned by a date hold generations of keys, made apart (relayforge_ensure_generation).
CREATE FUNCTION relayforge_ensure_partitions(p_from date, p_to date)
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

-- Step one of partitioning p_table by range of p_key: the table moves aside (to
-- partitions.<table>_old) and an empty partitioned table of the same columns takes its name;
-- the views that read it followed it aside, and are made to read the new one. The caller then
-- declares the keys and indexes, and calls relayforge_partition_adopt.
CREATE FUNCTION relayforge_partition_begin(p_table text, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_views text[][] := ARRAY(
        SELECT ARRAY[v.oid::regclass::text, pg_get_viewdef(v.oid)]
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
        JOIN pg_class v ON v.oid = r.ev_class
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = p_table::regclass
          AND v.oid <> p_table::regclass AND v.relkind = 'v'
        GROUP BY v.oid);
BEGIN
    EXECUTE format('ALTER TABLE %I SET SCHEMA partitions', p_table);
    EXECUTE format('ALTER TABLE partitions.%I RENAME TO %I', p_table, p_table || '_old');
    EXECUTE format('CREATE TABLE %I (LIKE partitions.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   'INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (%I)',
                   p_table, p_table || '_old', p_key);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I', p_table,
                   p_table || '_before_partitioning');  -- the old table's bound, not its own
    FOR i IN 1 .. coalesce(array_length(v_views, 1), 0) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', v_views[i][1], v_views[i][2]);
    END LOOP;
END $$;

-- Step two: the old table becomes the first partition, holding everything before the bound
-- 0023 gave it (proved by 0024: attaching reads no row), or, when it was empty, is dropped;
-- then the days around today.
CREATE FUNCTION relayforge_partition_adopt(p_table text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_old text := p_table || '_old';
    v_until date;
    v_name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM partitions.adoptions WHERE table_name = p_table) THEN
        EXECUTE format('DROP TABLE partitions.%I', v_old);  -- empty when bounded
    ELSE
        v_until := (SELECT until_day FROM partitions.adoptions WHERE table_name = p_table);
        v_name := p_table || '_before_'
                  || coalesce(to_char(v_until, 'YYYYMMDD'), 'partitioning');
        EXECUTE format('ALTER TABLE partitions.%I RENAME TO %I', v_old, v_name);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION partitions.%I '
                       'FOR VALUES FROM (MINVALUE) TO (%s)', p_table, v_name,
                       coalesce(relayforge_partition_bound(p_table::regclass, v_until),
                                'MAXVALUE'));
        EXECUTE format('ALTER TABLE partitions.%I DROP CONSTRAINT IF EXISTS %I', v_name,
                       p_table || '_before_partitioning');
    END IF;
    PERFORM relayforge_ensure_partition(p_table::regclass, d::date)
    FROM generate_series((now() AT TIME ZONE 'UTC')::date - 1,
                         (now() AT TIME ZONE 'UTC')::date + 3, interval '1 day') d;
END $$;

------------------------------------------------------------------------------- webhook_inbox

SELECT relayforge_partition_begin('webhook_inbox', 'id');
ALTER TABLE webhook_inbox ADD PRIMARY KEY (id);
CREATE INDEX webhook_inbox_tenant_received ON webhook_inbox (tenant_id, received_at DESC, id DESC);
CREATE INDEX webhook_inbox_received ON webhook_inbox (received_at);
CREATE INDEX webhook_inbox_job ON webhook_inbox (job_id);

SELECT relayforge_partition_adopt('webhook_inbox');

----------------------------------------------------------------------------- admin_audit_log

-- The key must include the partition key; ids still come from the one sequence, which moved
-- aside with the table and comes back to belong to the partitioned one (dropping the first
-- partition must not drop it).
SELECT relayforge_partition_begin('admin_audit_log', 'created_at');
ALTER TABLE admin_audit_log ADD PRIMARY KEY (id, created_at);
ALTER TABLE partitions.admin_audit_log_old DROP CONSTRAINT admin_audit_log_pkey;
ALTER SEQUENCE partitions.admin_audit_log_id_seq OWNED BY NONE;
ALTER SEQUENCE partitions.admin_audit_log_id_seq SET SCHEMA public;
ALTER SEQUENCE admin_audit_log_id_seq OWNED BY admin_audit_log.id;
CREATE INDEX admin_audit_log_created ON admin_audit_log (created_at);
SELECT relayforge_partition_adopt('admin_audit_log');
