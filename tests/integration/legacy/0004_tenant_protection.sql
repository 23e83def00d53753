-- Stripe anti-replay: an event id is accepted once per tenant.
CREATE TABLE stripe_event_idempotency (
    tenant_id  uuid        NOT NULL,
    event_id   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX stripe_event_idempotency_created ON stripe_event_idempotency (created_at);

-- Daily quota per tenant (UTC day); one row per tenant and day, charged once per ingest batch.
CREATE TABLE tenant_daily_quota_usage (
    tenant_id  uuid    NOT NULL,
    quota_date date    NOT NULL,
    used       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, quota_date)
);
