-- One accepted webhook of an ingest batch, as the batch statement takes it: one array of these
-- rows instead of fourteen parallel arrays. The driver encodes a row field by field with each
-- field's codec; parallel arrays cost it a Python-level type check per element.
CREATE TYPE ingest_row AS (
    inbox_id          uuid,
    job_id            uuid,
    tenant_id         uuid,
    source            text,
    event_type        text,
    provider_event_id text,
    dedup_key         text,
    payload_hash      text,
    headers           text,
    body              bytea,
    event             bytea,
    request_id        text,
    correlation_id    text,
    trace_context     text
);
