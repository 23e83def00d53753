-- Deliveries left for the relay wake it on a channel of their own, so that it claims deliveries
-- only when some may be due (this NOTIFY, or the time its next-due query gave) instead of
-- once more after every outbox batch.
CREATE OR REPLACE FUNCTION relayforge_deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'pending' AND claimed_until IS NULL) THEN
        PERFORM pg_notify('relayforge_deliveries', '');
    END IF;
    RETURN NULL;
END $$;
