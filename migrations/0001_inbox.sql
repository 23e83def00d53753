-- Every webhook request that passed the signature check leaves one row here: accepted ones with
-- their raw body, rejected ones (invalid payload, stale, replayed) with metadata only unless
-- WEBHOOKS__STORE_REJECTED_BODIES=true.
CREATE TABLE webhook_inbox (
    id                uuid PRIMARY KEY,
    tenant_id         uuid        NOT NULL,
    source            text        NOT NULL,
    event_type        text,
    provider_event_id text,
    dedup_key         text,
    payload_hash      text        NOT NULL,
    headers           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    body              bytea,
    accepted          boolean     NOT NULL,
    signature_valid   boolean     NOT NULL,
    rejection_code    text,
    job_id            uuid,
    request_id        text,
    received_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_inbox_tenant_received ON webhook_inbox (tenant_id, received_at DESC, id DESC);
CREATE INDEX webhook_inbox_received ON webhook_inbox (received_at);
CREATE INDEX webhook_inbox_job ON webhook_inbox (job_id);
