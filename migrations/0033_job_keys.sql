-- A job's dedup key is held unique through a 16-byte digest of (tenant, source, key) instead of
-- the key itself: `jobs_key` stores 16 bytes per job where `jobs_dedup` stored the whole key
-- (about 170 bytes an entry, and more in the full-page images of its WAL). The digest is the
-- first half of a SHA-256, so two keys share one only by a collision nobody can compute; the key
-- itself stays in the row, as the admin API shows it.
-- Ingest computes the digest and stores it (dedup_digest), so PostgreSQL computes none for it:
-- its sha256() goes through OpenSSL, with an allocation and a lookup of the algorithm per call,
-- and computed in the index for every webhook it took a tenth of PostgreSQL's CPU at ingest.
-- Rows written otherwise (by the release before during an upgrade, by SQL functions, or before
-- this migration) have none, and the index computes theirs with relayforge_job_key, the same
-- digest. That function is made of immutable built-ins only, so PostgreSQL inlines it
-- (textsend and convert_to are stable): a text's bytes are what `escape` decodes from it once
-- each backslash is doubled.
-- The release before upserts on jobs_dedup, so that index stays until the upgrade is finished
-- (0034). Writes to jobs wait while this one is built (as long as reading the table once).
ALTER TABLE jobs ADD COLUMN dedup_digest uuid;

CREATE FUNCTION relayforge_job_key(p_tenant uuid, p_source text, p_dedup_key text)
RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT encode(substring(sha256(uuid_send(p_tenant)
                                   || decode(replace(p_source, '\', '\\'), 'escape')
                                   || '\x00'::bytea
                                   || decode(replace(p_dedup_key, '\', '\\'), 'escape'))
                            FROM 1 FOR 16), 'hex')::uuid
$$;

CREATE UNIQUE INDEX jobs_key
    ON jobs ((coalesce(dedup_digest, relayforge_job_key(tenant_id, source, dedup_key))));
