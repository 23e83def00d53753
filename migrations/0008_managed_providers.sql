-- A tenant that has ever had a managed (DB) secret for a provider never falls back to the shared
-- env secret, even after its last secret is retired: the marker outlives the secrets.
CREATE TABLE tenant_managed_providers (
    tenant_id uuid        NOT NULL,
    provider  text        NOT NULL,
    since     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider)
);
INSERT INTO tenant_managed_providers (tenant_id, provider, since)
SELECT tenant_id, provider, min(created_at) FROM tenant_provider_secrets GROUP BY 1, 2;
