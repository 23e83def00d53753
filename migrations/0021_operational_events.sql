-- Operational events: a tenant's operational endpoint is a destination of kind 'operational'
-- (at most one per tenant), left out of fan-out and of the destinations list. Relayforge's own
-- events about the tenant's other destinations (destination.disabled,
-- destination.circuit_opened, delivery.dead_lettered) go to it through the same machinery:
-- each is a job of source 'relayforge' (already succeeded: no handler runs it) with one
-- delivery to the endpoint, written by the very statement that disables, opens or
-- dead-letters. The endpoint's own troubles raise none: never a loop. A constant default: no
-- table rewrite.
ALTER TABLE destinations ADD COLUMN kind text NOT NULL DEFAULT 'events'
    CHECK (kind IN ('events', 'operational'));
CREATE UNIQUE INDEX destinations_one_operational ON destinations (tenant_id)
    WHERE kind = 'operational';

-- A time-ordered id, as the application's (UUIDv7: 48 bits of milliseconds, then random).
CREATE FUNCTION relayforge_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
        substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- The operational event `p_type` about destination `p_destination`, with `p_data`: its job and
-- its delivery (with `p_attempts` attempts) to the tenant's enabled operational endpoint. NULL
-- when there is none, or when `p_destination` is itself an operational endpoint.
CREATE FUNCTION relayforge_operational_event(p_destination uuid, p_type text, p_data jsonb,
                                             p_attempts integer) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    endpoint uuid;
    tenant uuid;
    job uuid := relayforge_uuid7();
BEGIN
    SELECT o.id, o.tenant_id INTO endpoint, tenant
    FROM destinations d
    JOIN destinations o ON o.tenant_id = d.tenant_id AND o.kind = 'operational' AND o.enabled
    WHERE d.id = p_destination AND d.kind = 'events';
    IF endpoint IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, provider_event_id, event,
                      status, attempts, max_attempts, first_inbox_id, last_inbox_id)
    VALUES (job, tenant, 'relayforge', 'operational:' || job, p_type, job::text,
            convert_to(jsonb_build_object(
                'source', 'relayforge', 'event_type', p_type, 'provider_event_id', job::text,
                'occurred_at_unix', floor(extract(epoch FROM now()))::bigint,
                'data', p_data)::text, 'UTF8'),
            'succeeded', 0, 1, job, job);
    INSERT INTO deliveries (id, job_id, destination_id, tenant_id, max_attempts)
    VALUES (relayforge_uuid7(), job, endpoint, tenant, p_attempts);
    RETURN job;
END $$;
