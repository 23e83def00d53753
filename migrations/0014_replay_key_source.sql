-- A replay-protected event id is unique per tenant AND source: a second replay-protected
-- connector would otherwise collide with Stripe's ids. Existing rows are Stripe's.
ALTER TABLE stripe_event_idempotency ADD COLUMN source text NOT NULL DEFAULT 'stripe';
ALTER TABLE stripe_event_idempotency ALTER COLUMN source DROP DEFAULT;
ALTER TABLE stripe_event_idempotency DROP CONSTRAINT stripe_event_idempotency_pkey;
ALTER TABLE stripe_event_idempotency ADD PRIMARY KEY (tenant_id, source, event_id);
