-- Messages to publish, written in the same transaction as the state they announce. The relay
-- claims due rows with FOR UPDATE SKIP LOCKED; a statement-level trigger wakes it at once.
CREATE TABLE outbox_messages (
    id               bigserial PRIMARY KEY,
    job_id           uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    tenant_id        uuid        NOT NULL,
    routing_key      text        NOT NULL,
    attempt          integer     NOT NULL,   -- the job attempt this message starts
    headers          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent')),
    available_at     timestamptz NOT NULL DEFAULT now(),
    claimed_until    timestamptz,
    publish_attempts integer     NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX outbox_due ON outbox_messages (available_at, id) WHERE status = 'pending';
CREATE INDEX outbox_sent ON outbox_messages (sent_at) WHERE status = 'sent';
CREATE INDEX outbox_job ON outbox_messages (job_id);

CREATE FUNCTION relayforge_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relayforge_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_messages_notify AFTER INSERT ON outbox_messages
    FOR EACH STATEMENT EXECUTE FUNCTION relayforge_outbox_notify();
