-- The relay's claim on a delivery names its owner, as outbox_messages' does: a relay that hit
-- an error gives back the claims it holds at once instead of waiting out their leases.
ALTER TABLE deliveries ADD COLUMN claimed_by text;
