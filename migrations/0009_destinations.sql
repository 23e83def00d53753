-- Destinations: a tenant's own HTTP services, each receiving the events its filter matches.
-- A delivery is one event on its way to one destination, with its own state machine (as jobs):
--   pending → queued → processing → succeeded | retrying (→ queued …) | dead_lettered
-- The delivery row is its own outbox: the relay publishes those pending or retrying and due.
CREATE TABLE destinations (
    id                    uuid        PRIMARY KEY,
    tenant_id             uuid        NOT NULL,
    name                  text,
    url                   text        NOT NULL,
    enabled               boolean     NOT NULL DEFAULT true,
    disabled_reason       text,
    filter                jsonb       NOT NULL DEFAULT '{}',
    header_names          text[]      NOT NULL DEFAULT '{}',
    headers_nonce         bytea,       -- custom header values, encrypted like tenant secrets
    headers_ciphertext    bytea,
    payload               text        NOT NULL DEFAULT 'raw' CHECK (payload IN ('raw', 'event')),
    timeout_ms            integer     NOT NULL DEFAULT 10000,
    rate_limit_per_second double precision,
    max_concurrency       integer,
    circuit               text        NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open')),
    consecutive_failures  integer     NOT NULL DEFAULT 0,
    failing_since         timestamptz,
    circuit_opened_at     timestamptz,
    next_probe_at         timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX destinations_tenant ON destinations (tenant_id, created_at, id);

CREATE TABLE destination_secrets (
    id             uuid        PRIMARY KEY,
    destination_id uuid        NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    nonce          bytea       NOT NULL,
    ciphertext     bytea       NOT NULL,
    fingerprint    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz  -- NULL: current; a rotation gives the previous one an end
);
CREATE INDEX destination_secrets_destination ON destination_secrets (destination_id, created_at);

CREATE TABLE deliveries (
    id               uuid        PRIMARY KEY,
    job_id           uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    destination_id   uuid        NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    tenant_id        uuid        NOT NULL,
    redelivery       boolean     NOT NULL DEFAULT false,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN
                         ('pending', 'queued', 'processing', 'succeeded', 'retrying', 'dead_lettered')),
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    last_error       text,
    available_at     timestamptz NOT NULL DEFAULT now(),  -- when its next message may go out
    claimed_until    timestamptz,                          -- a relay's lease on publishing it
    lease_expires_at timestamptz,                          -- a consumer's lease while processing
    headers          jsonb       NOT NULL DEFAULT '{}',    -- trace context and correlation id
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- fan-out runs again on every attempt of the job: one delivery per (event, destination)
CREATE UNIQUE INDEX deliveries_fan_out ON deliveries (job_id, destination_id) WHERE NOT redelivery;
CREATE INDEX deliveries_due ON deliveries (available_at) WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_processing ON deliveries (lease_expires_at) WHERE status = 'processing';
CREATE INDEX deliveries_status_created ON deliveries (status, created_at DESC, id DESC);
CREATE INDEX deliveries_destination ON deliveries (destination_id, created_at DESC, id DESC);
CREATE INDEX deliveries_job ON deliveries (job_id);

CREATE TABLE delivery_attempts (
    delivery_id   uuid             NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt       integer          NOT NULL,
    started_at    timestamptz      NOT NULL,
    duration_ms   double precision NOT NULL,
    status_code   integer,
    error         text,
    response_body text,
    PRIMARY KEY (delivery_id, attempt)
);

-- New deliveries wake the relay, as new outbox rows do.
CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION relayforge_outbox_notify();
