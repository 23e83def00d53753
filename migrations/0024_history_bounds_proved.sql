-- The bounds 0023 gave the history tables are proved: each table is read once, while writes
-- go on (VALIDATE takes a lock that lets them through). This is the long step on a large
-- database; 0025 then attaches each table as its first partition without reading it again.
CREATE FUNCTION relayforge_partition_prove() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
             WHERE conname LIKE '%\_before\_partitioning' AND NOT convalidated LOOP
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v.tbl, v.conname);
    END LOOP;
END $$;

SELECT relayforge_partition_prove();
