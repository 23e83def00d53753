-- A consumer now starts or claims the deliveries it fans out and attempts them itself; only
-- deliveries left for the relay (pending, unclaimed) wake it.
CREATE FUNCTION relayforge_deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'pending' AND claimed_until IS NULL) THEN
        PERFORM pg_notify('relayforge_outbox', '');
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER deliveries_notify ON deliveries;
CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION relayforge_deliveries_notify();
