-- Per-tenant provider secrets, AES-GCM encrypted under SECRETS__MASTER_KEY. Several rows may be
-- active at once (rotation overlap); expires_at null means current.
CREATE TABLE tenant_provider_secrets (
    id          uuid PRIMARY KEY,
    tenant_id   uuid        NOT NULL,
    provider    text        NOT NULL,
    nonce       bytea       NOT NULL,
    ciphertext  bytea       NOT NULL,
    fingerprint text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX tenant_provider_secrets_lookup ON tenant_provider_secrets (tenant_id, provider);

CREATE FUNCTION relayforge_secrets_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relayforge_secrets', '');
    RETURN NULL;
END $$;

CREATE TRIGGER tenant_provider_secrets_notify AFTER INSERT OR UPDATE OR DELETE ON tenant_provider_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION relayforge_secrets_notify();

-- Admin API keys: only the SHA-256 of a key is stored.
CREATE TABLE admin_api_keys (
    id           uuid PRIMARY KEY,
    name         text        NOT NULL,
    key_hash     text        NOT NULL UNIQUE,
    role         text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE TABLE admin_audit_log (
    id         bigserial PRIMARY KEY,
    key_id     uuid,
    key_source text        NOT NULL,  -- 'db' or 'fallback'
    role       text        NOT NULL,
    action     text        NOT NULL,
    target     text,
    detail     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_audit_log_created ON admin_audit_log (created_at);
