-- Sources a tenant defines without code: how its requests are verified, where the event type
-- and id are, how large a body may be. Every ingest process caches them and hears changes.
CREATE TABLE tenant_sources (
    tenant_id  uuid        NOT NULL,
    name       text        NOT NULL,
    definition jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE FUNCTION relayforge_sources_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relayforge_sources', coalesce(NEW.tenant_id, OLD.tenant_id)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER tenant_sources_notify AFTER INSERT OR UPDATE OR DELETE ON tenant_sources
    FOR EACH ROW EXECUTE FUNCTION relayforge_sources_notify();
