-- A destination's waiting deliveries by attempts spent: while its circuit is open the probe goes
-- to one that has spent the fewest, and the gate asks for that on every probe.
CREATE INDEX deliveries_waiting ON deliveries (destination_id, attempts)
    WHERE status IN ('pending', 'queued', 'retrying');
