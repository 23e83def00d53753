-- One job per unique event: (tenant_id, source, dedup_key) is the idempotency key of ingest.
CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    tenant_id         uuid        NOT NULL,
    source            text        NOT NULL,
    dedup_key         text        NOT NULL,
    event_type        text        NOT NULL,
    provider_event_id text,
    event             bytea       NOT NULL,  -- the DomainEvent, JSON (bytea: no jsonb NUL limits)
    status            text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'queued', 'processing', 'succeeded', 'retrying', 'dead_lettered')),
    attempts          integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL,
    last_error        text,
    lease_expires_at  timestamptz,
    correlation_id    text,
    trace_context     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    first_inbox_id    uuid        NOT NULL,
    last_inbox_id     uuid        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_dedup UNIQUE (tenant_id, source, dedup_key)
);
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'processing';
