-- columns
admin_api_keys.created_at timestamp with time zone NOT NULL DEFAULT now()
admin_api_keys.id uuid NOT NULL
admin_api_keys.key_hash text NOT NULL
admin_api_keys.last_used_at timestamp with time zone
admin_api_keys.name text NOT NULL
admin_api_keys.revoked_at timestamp with time zone
admin_api_keys.role text NOT NULL
admin_audit_log.action text NOT NULL
admin_audit_log.created_at timestamp with time zone NOT NULL DEFAULT now()
admin_audit_log.detail jsonb NOT NULL DEFAULT '{}'::jsonb
admin_audit_log.id bigint NOT NULL DEFAULT nextval('admin_audit_log_id_seq'::regclass)
admin_audit_log.key_id uuid
admin_audit_log.key_source text NOT NULL
admin_audit_log.role text NOT NULL
admin_audit_log.target text
console_sessions.created_at timestamp with time zone NOT NULL DEFAULT now()
console_sessions.csrf_token text NOT NULL
console_sessions.expires_at timestamp with time zone NOT NULL
console_sessions.key_hash text NOT NULL
console_sessions.token_hash text NOT NULL
deliveries.attempts integer NOT NULL DEFAULT 0
deliveries.available_at timestamp with time zone NOT NULL DEFAULT now()
deliveries.claimed_by text
deliveries.claimed_until timestamp with time zone
deliveries.created_at timestamp with time zone NOT NULL DEFAULT now()
deliveries.destination_id uuid NOT NULL
deliveries.headers jsonb NOT NULL DEFAULT '{}'::jsonb
deliveries.id uuid NOT NULL
deliveries.job_id uuid NOT NULL
deliveries.last_error text
deliveries.lease_expires_at timestamp with time zone
deliveries.max_attempts integer NOT NULL
deliveries.redelivery boolean NOT NULL DEFAULT false
deliveries.status text NOT NULL DEFAULT 'pending'::text
deliveries.tenant_id uuid NOT NULL
deliveries.updated_at timestamp with time zone NOT NULL DEFAULT now()
delivery_attempts.attempt integer NOT NULL
delivery_attempts.delivery_id uuid NOT NULL
delivery_attempts.duration_ms double precision NOT NULL
delivery_attempts.error text
delivery_attempts.response_body text
delivery_attempts.started_at timestamp with time zone NOT NULL
delivery_attempts.status_code integer
delivery_requests.body bytea
delivery_requests.content_type text
delivery_requests.data_path ARRAY
delivery_requests.destination_id uuid
delivery_requests.event bytea
delivery_requests.event_type text
delivery_requests.headers_ciphertext bytea
delivery_requests.headers_nonce bytea
delivery_requests.job_id uuid
delivery_requests.max_concurrency integer
delivery_requests.occurred_at_unix bigint
delivery_requests.payload text
delivery_requests.provider_event_id text
delivery_requests.rate_limit_per_second double precision
delivery_requests.secret_ciphertexts ARRAY
delivery_requests.secret_nonces ARRAY
delivery_requests.source text
delivery_requests.timeout_ms integer
delivery_requests.url text
destination_requests.destination_id uuid
destination_requests.headers_ciphertext bytea
destination_requests.headers_nonce bytea
destination_requests.max_concurrency integer
destination_requests.payload text
destination_requests.rate_limit_per_second double precision
destination_requests.secret_ciphertexts ARRAY
destination_requests.secret_nonces ARRAY
destination_requests.timeout_ms integer
destination_requests.url text
destination_secrets.ciphertext bytea NOT NULL
destination_secrets.created_at timestamp with time zone NOT NULL DEFAULT now()
destination_secrets.destination_id uuid NOT NULL
destination_secrets.expires_at timestamp with time zone
destination_secrets.fingerprint text NOT NULL
destination_secrets.id uuid NOT NULL
destination_secrets.nonce bytea NOT NULL
destinations.circuit text NOT NULL DEFAULT 'closed'::text
destinations.circuit_opened_at timestamp with time zone
destinations.consecutive_failures integer NOT NULL DEFAULT 0
destinations.created_at timestamp with time zone NOT NULL DEFAULT now()
destinations.disabled_reason text
destinations.enabled boolean NOT NULL DEFAULT true
destinations.failing_since timestamp with time zone
destinations.filter jsonb NOT NULL DEFAULT '{}'::jsonb
destinations.header_names ARRAY NOT NULL DEFAULT '{}'::text[]
destinations.headers_ciphertext bytea
destinations.headers_nonce bytea
destinations.id uuid NOT NULL
destinations.kind text NOT NULL DEFAULT 'events'::text
destinations.max_concurrency integer
destinations.name text
destinations.next_probe_at timestamp with time zone
destinations.paused boolean NOT NULL DEFAULT false
destinations.payload text NOT NULL DEFAULT 'raw'::text
destinations.rate_limit_per_second double precision
destinations.tenant_id uuid NOT NULL
destinations.timeout_ms integer NOT NULL DEFAULT 10000
destinations.updated_at timestamp with time zone NOT NULL DEFAULT now()
destinations.url text NOT NULL
job_attempts.attempt integer NOT NULL
job_attempts.error text
job_attempts.finished_at timestamp with time zone NOT NULL DEFAULT now()
job_attempts.job_id uuid NOT NULL
jobs.attempts integer NOT NULL DEFAULT 0
jobs.correlation_id text
jobs.created_at timestamp with time zone NOT NULL DEFAULT now()
jobs.data_path ARRAY
jobs.dedup_digest uuid
jobs.dedup_key text
jobs.event bytea
jobs.event_type text NOT NULL
jobs.first_inbox_id uuid NOT NULL
jobs.id uuid NOT NULL
jobs.last_error text
jobs.last_inbox_id uuid
jobs.lease_expires_at timestamp with time zone
jobs.max_attempts integer NOT NULL
jobs.message_due_at timestamp with time zone
jobs.occurred_at_unix bigint
jobs.provider_event_id text
jobs.publish_failures integer
jobs.source text NOT NULL
jobs.status text NOT NULL DEFAULT 'pending'::text
jobs.tenant_id uuid NOT NULL
jobs.trace_context jsonb NOT NULL DEFAULT '{}'::jsonb
jobs.updated_at timestamp with time zone NOT NULL DEFAULT now()
outbox_messages.attempt integer NOT NULL
outbox_messages.available_at timestamp with time zone NOT NULL DEFAULT now()
outbox_messages.claimed_by text
outbox_messages.claimed_until timestamp with time zone
outbox_messages.created_at timestamp with time zone NOT NULL DEFAULT now()
outbox_messages.headers jsonb NOT NULL DEFAULT '{}'::jsonb
outbox_messages.id bigint NOT NULL DEFAULT nextval('outbox_messages_id_seq'::regclass)
outbox_messages.job_id uuid NOT NULL
outbox_messages.last_error text
outbox_messages.publish_attempts integer NOT NULL DEFAULT 0
outbox_messages.publish_failures integer NOT NULL DEFAULT 0
outbox_messages.sent_at timestamp with time zone
outbox_messages.status text NOT NULL DEFAULT 'pending'::text
outbox_messages.tenant_id uuid NOT NULL
process_leases.expires_at timestamp with time zone NOT NULL
process_leases.id text NOT NULL
process_leases.kind text NOT NULL
schema_migrations.applied_at timestamp with time zone NOT NULL DEFAULT now()
schema_migrations.checksum text
schema_migrations.version text NOT NULL
stripe_event_idempotency.created_at timestamp with time zone NOT NULL DEFAULT now()
stripe_event_idempotency.event_id text NOT NULL
stripe_event_idempotency.generation date NOT NULL
stripe_event_idempotency.source text NOT NULL
stripe_event_idempotency.tenant_id uuid NOT NULL
tenant_daily_quota_usage.last_grant integer NOT NULL DEFAULT 0
tenant_daily_quota_usage.quota_date date NOT NULL
tenant_daily_quota_usage.tenant_id uuid NOT NULL
tenant_daily_quota_usage.used integer NOT NULL DEFAULT 0
tenant_managed_providers.provider text NOT NULL
tenant_managed_providers.since timestamp with time zone NOT NULL DEFAULT now()
tenant_managed_providers.tenant_id uuid NOT NULL
tenant_provider_secrets.ciphertext bytea NOT NULL
tenant_provider_secrets.created_at timestamp with time zone NOT NULL DEFAULT now()
tenant_provider_secrets.expires_at timestamp with time zone
tenant_provider_secrets.fingerprint text NOT NULL
tenant_provider_secrets.id uuid NOT NULL
tenant_provider_secrets.nonce bytea NOT NULL
tenant_provider_secrets.provider text NOT NULL
tenant_provider_secrets.tenant_id uuid NOT NULL
tenant_sources.created_at timestamp with time zone NOT NULL DEFAULT now()
tenant_sources.definition jsonb NOT NULL
tenant_sources.name text NOT NULL
tenant_sources.tenant_id uuid NOT NULL
tenant_sources.updated_at timestamp with time zone NOT NULL DEFAULT now()
webhook_inbox.accepted boolean NOT NULL
webhook_inbox.body bytea
webhook_inbox.dedup_key text
webhook_inbox.event_type text
webhook_inbox.headers jsonb NOT NULL DEFAULT '{}'::jsonb
webhook_inbox.id uuid NOT NULL
webhook_inbox.job_id uuid
webhook_inbox.payload_hash text
webhook_inbox.provider_event_id text
webhook_inbox.received_at timestamp with time zone NOT NULL DEFAULT now()
webhook_inbox.rejection_code text
webhook_inbox.request_id text
webhook_inbox.signature_valid boolean NOT NULL
webhook_inbox.source text
webhook_inbox.tenant_id uuid NOT NULL

-- constraints
admin_api_keys admin_api_keys_key_hash_key UNIQUE (key_hash)
admin_api_keys admin_api_keys_pkey PRIMARY KEY (id)
admin_api_keys admin_api_keys_role_check CHECK ((role = ANY (ARRAY['viewer'::text, 'operator'::text, 'admin'::text])))
admin_audit_log admin_audit_log_pkey PRIMARY KEY (id, created_at)
console_sessions console_sessions_pkey PRIMARY KEY (token_hash)
deliveries deliveries_destination_id_fkey FOREIGN KEY (destination_id) REFERENCES destinations(id) ON DELETE CASCADE
deliveries deliveries_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE
deliveries deliveries_pkey PRIMARY KEY (id)
deliveries deliveries_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'queued'::text, 'processing'::text, 'succeeded'::text, 'retrying'::text, 'dead_lettered'::text])))
delivery_attempts delivery_attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES deliveries(id) ON DELETE CASCADE
delivery_attempts delivery_attempts_pkey PRIMARY KEY (delivery_id, attempt)
destination_secrets destination_secrets_destination_id_fkey FOREIGN KEY (destination_id) REFERENCES destinations(id) ON DELETE CASCADE
destination_secrets destination_secrets_pkey PRIMARY KEY (id)
destinations destinations_circuit_check CHECK ((circuit = ANY (ARRAY['closed'::text, 'open'::text])))
destinations destinations_kind_check CHECK ((kind = ANY (ARRAY['events'::text, 'operational'::text])))
destinations destinations_payload_check CHECK ((payload = ANY (ARRAY['raw'::text, 'event'::text])))
destinations destinations_pkey PRIMARY KEY (id)
job_attempts job_attempts_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE
job_attempts job_attempts_pkey PRIMARY KEY (job_id, attempt)
jobs jobs_event_or_data_path CHECK (((event IS NOT NULL) OR (data_path IS NOT NULL))) NOT VALID
jobs jobs_pkey PRIMARY KEY (id)
jobs jobs_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'queued'::text, 'processing'::text, 'succeeded'::text, 'retrying'::text, 'dead_lettered'::text])))
outbox_messages outbox_messages_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE
outbox_messages outbox_messages_pkey PRIMARY KEY (id)
outbox_messages outbox_messages_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'sent'::text, 'failed'::text])))
process_leases process_leases_kind_check CHECK ((kind = ANY (ARRAY['ingest'::text, 'consume'::text])))
process_leases process_leases_pkey PRIMARY KEY (id)
schema_migrations schema_migrations_pkey PRIMARY KEY (version)
stripe_event_idempotency stripe_event_idempotency_pkey PRIMARY KEY (tenant_id, source, event_id, generation)
tenant_daily_quota_usage tenant_daily_quota_usage_pkey PRIMARY KEY (tenant_id, quota_date)
tenant_managed_providers tenant_managed_providers_pkey PRIMARY KEY (tenant_id, provider)
tenant_provider_secrets tenant_provider_secrets_pkey PRIMARY KEY (id)
tenant_sources tenant_sources_pkey PRIMARY KEY (tenant_id, name)
webhook_inbox webhook_inbox_pkey PRIMARY KEY (id)

-- indexes
CREATE INDEX admin_audit_log_created ON ONLY public.admin_audit_log USING btree (created_at)
CREATE INDEX console_sessions_expires ON public.console_sessions USING btree (expires_at)
CREATE INDEX deliveries_destination ON public.deliveries USING btree (destination_id, id)
CREATE INDEX deliveries_due ON public.deliveries USING btree (available_at) WHERE (status = ANY (ARRAY['pending'::text, 'retrying'::text]))
CREATE INDEX deliveries_job ON public.deliveries USING btree (job_id)
CREATE INDEX deliveries_processing ON public.deliveries USING btree (lease_expires_at) WHERE (status = 'processing'::text)
CREATE INDEX deliveries_status ON public.deliveries USING btree (status, id)
CREATE INDEX deliveries_waiting ON public.deliveries USING btree (destination_id, attempts) WHERE (status = ANY (ARRAY['pending'::text, 'queued'::text, 'retrying'::text]))
CREATE INDEX destination_secrets_destination ON public.destination_secrets USING btree (destination_id, created_at)
CREATE INDEX destinations_tenant ON public.destinations USING btree (tenant_id, created_at, id)
CREATE INDEX jobs_lease ON public.jobs USING btree (lease_expires_at) WHERE (status = 'processing'::text)
CREATE INDEX jobs_message_due ON public.jobs USING btree (message_due_at, id) WHERE (message_due_at IS NOT NULL)
CREATE INDEX jobs_status ON public.jobs USING btree (status, id)
CREATE INDEX jobs_tenant ON public.jobs USING btree (tenant_id, id)
CREATE INDEX outbox_due ON public.outbox_messages USING btree (available_at, id) WHERE (status = 'pending'::text)
CREATE INDEX outbox_sent ON public.outbox_messages USING btree (sent_at) WHERE (status = 'sent'::text)
CREATE INDEX tenant_provider_secrets_lookup ON public.tenant_provider_secrets USING btree (tenant_id, provider)
CREATE INDEX webhook_inbox_repeats ON ONLY public.webhook_inbox USING btree (job_id) WHERE (source IS NOT NULL)
CREATE INDEX webhook_inbox_tenant ON ONLY public.webhook_inbox USING btree (tenant_id, id)
CREATE UNIQUE INDEX admin_api_keys_key_hash_key ON public.admin_api_keys USING btree (key_hash)
CREATE UNIQUE INDEX admin_api_keys_pkey ON public.admin_api_keys USING btree (id)
CREATE UNIQUE INDEX admin_audit_log_pkey ON ONLY public.admin_audit_log USING btree (id, created_at)
CREATE UNIQUE INDEX console_sessions_pkey ON public.console_sessions USING btree (token_hash)
CREATE UNIQUE INDEX deliveries_fan_out ON public.deliveries USING btree (job_id, destination_id) WHERE (NOT redelivery)
CREATE UNIQUE INDEX deliveries_pkey ON public.deliveries USING btree (id)
CREATE UNIQUE INDEX delivery_attempts_pkey ON public.delivery_attempts USING btree (delivery_id, attempt)
CREATE UNIQUE INDEX destination_secrets_pkey ON public.destination_secrets USING btree (id)
CREATE UNIQUE INDEX destinations_one_operational ON public.destinations USING btree (tenant_id) WHERE (kind = 'operational'::text)
CREATE UNIQUE INDEX destinations_pkey ON public.destinations USING btree (id)
CREATE UNIQUE INDEX job_attempts_pkey ON public.job_attempts USING btree (job_id, attempt)
CREATE UNIQUE INDEX jobs_key ON public.jobs USING btree (COALESCE(dedup_digest, relayforge_job_key(tenant_id, source, dedup_key)))
CREATE UNIQUE INDEX jobs_pkey ON public.jobs USING btree (id)
CREATE UNIQUE INDEX outbox_job_attempt ON public.outbox_messages USING btree (job_id, attempt)
CREATE UNIQUE INDEX outbox_messages_pkey ON public.outbox_messages USING btree (id)
CREATE UNIQUE INDEX process_leases_pkey ON public.process_leases USING btree (id)
CREATE UNIQUE INDEX schema_migrations_pkey ON public.schema_migrations USING btree (version)
CREATE UNIQUE INDEX stripe_event_idempotency_pkey ON ONLY public.stripe_event_idempotency USING btree (tenant_id, source, event_id, generation)
CREATE UNIQUE INDEX tenant_daily_quota_usage_pkey ON public.tenant_daily_quota_usage USING btree (tenant_id, quota_date)
CREATE UNIQUE INDEX tenant_managed_providers_pkey ON public.tenant_managed_providers USING btree (tenant_id, provider)
CREATE UNIQUE INDEX tenant_provider_secrets_pkey ON public.tenant_provider_secrets USING btree (id)
CREATE UNIQUE INDEX tenant_sources_pkey ON public.tenant_sources USING btree (tenant_id, name)
CREATE UNIQUE INDEX webhook_inbox_pkey ON ONLY public.webhook_inbox USING btree (id)

-- triggers
CREATE TRIGGER deliveries_notify AFTER INSERT ON public.deliveries REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION relayforge_deliveries_notify()
CREATE TRIGGER jobs_notify_message_due AFTER UPDATE OF message_due_at ON public.jobs FOR EACH ROW WHEN (((new.message_due_at IS NOT NULL) AND (old.message_due_at IS DISTINCT FROM new.message_due_at))) EXECUTE FUNCTION relayforge_outbox_notify()
CREATE TRIGGER jobs_notify_new AFTER INSERT ON public.jobs REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION relayforge_jobs_notify_new()
CREATE TRIGGER outbox_messages_hand_over AFTER INSERT ON public.outbox_messages FOR EACH ROW WHEN ((new.status = 'pending'::text)) EXECUTE FUNCTION relayforge_outbox_hand_over()
CREATE TRIGGER outbox_messages_notify AFTER INSERT ON public.outbox_messages FOR EACH STATEMENT EXECUTE FUNCTION relayforge_outbox_notify()
CREATE TRIGGER tenant_provider_secrets_notify AFTER INSERT OR DELETE OR UPDATE ON public.tenant_provider_secrets FOR EACH STATEMENT EXECUTE FUNCTION relayforge_secrets_notify()
CREATE TRIGGER tenant_sources_notify AFTER INSERT OR DELETE OR UPDATE ON public.tenant_sources FOR EACH ROW EXECUTE FUNCTION relayforge_sources_notify()

-- types
ingest_row.01 inbox_id uuid
ingest_row.02 job_id uuid
ingest_row.03 tenant_id uuid
ingest_row.04 source text
ingest_row.05 event_type text
ingest_row.06 provider_event_id text
ingest_row.07 dedup_key text
ingest_row.08 payload_hash text
ingest_row.09 headers text
ingest_row.10 body bytea
ingest_row.11 event bytea
ingest_row.12 request_id text
ingest_row.13 correlation_id text
ingest_row.14 trace_context text
ingest_row.15 occurred_at_unix bigint
ingest_row.16 data_path text[]

-- functions
CREATE OR REPLACE FUNCTION public.relayforge_bound_time(p_literal text)
 RETURNS timestamp with time zone
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE WHEN p_literal ~ '^[0-9a-f]{8}-' THEN relayforge_uuid7_time(p_literal::uuid)
                ELSE p_literal::timestamptz END
$function$
CREATE OR REPLACE FUNCTION public.relayforge_deliveries_notify()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'pending' AND claimed_until IS NULL) THEN
        PERFORM pg_notify('relayforge_deliveries', '');
    END IF;
    RETURN NULL;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_ensure_generation(p_parent regclass, p_day date, p_span integer)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_from date := relayforge_generation(p_day, p_span);
    v_to date := relayforge_generation(p_day, p_span) + p_span;
    v_bounds record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('relayforge.partitions'));
    FOR v_bounds IN
        SELECT relayforge_bound_time(substring(b FROM 'FROM \(''([^'']*)''\)')) AS lo,
               relayforge_bound_time(substring(b FROM 'TO \(''([^'']*)''\)')) AS hi,
               b ~ 'FROM \(MINVALUE\)' AS open_lo, b ~ 'TO \(MAXVALUE\)' AS open_hi
        FROM (SELECT pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = p_parent) s
    LOOP
        IF (v_bounds.open_lo OR (v_bounds.lo AT TIME ZONE 'UTC')::date <= p_day)
           AND (v_bounds.open_hi OR (v_bounds.hi AT TIME ZONE 'UTC')::date > p_day) THEN
            RETURN false;  -- covered
        END IF;
        IF NOT v_bounds.open_hi AND (v_bounds.hi AT TIME ZONE 'UTC')::date <= p_day THEN
            v_from := greatest(v_from, (v_bounds.hi AT TIME ZONE 'UTC')::date);
        END IF;
        IF NOT v_bounds.open_lo AND (v_bounds.lo AT TIME ZONE 'UTC')::date > p_day THEN
            v_to := least(v_to, (v_bounds.lo AT TIME ZONE 'UTC')::date);
        END IF;
    END LOOP;
    EXECUTE format('CREATE TABLE partitions.%I (LIKE %s INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS INCLUDING STORAGE)',
                   (SELECT relname FROM pg_class WHERE oid = p_parent) || '_'
                   || to_char(v_from, 'YYYYMMDD'), p_parent);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION partitions.%I FOR VALUES FROM (%L) TO (%L)',
                   p_parent, (SELECT relname FROM pg_class WHERE oid = p_parent) || '_'
                   || to_char(v_from, 'YYYYMMDD'), v_from, v_to);
    RETURN true;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_ensure_partition(p_parent regclass, p_day date)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_name text := (SELECT relname FROM pg_class WHERE oid = p_parent) || '_'
                   || to_char(p_day, 'YYYYMMDD');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('relayforge.partitions'));
    IF to_regclass(format('partitions.%I', v_name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE partitions.%I (LIKE %s INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS INCLUDING STORAGE)', v_name, p_parent);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION partitions.%I FOR VALUES FROM (%s) TO (%s)',
                       p_parent, v_name, relayforge_partition_bound(p_parent, p_day),
                       relayforge_partition_bound(p_parent, p_day + 1));
    EXCEPTION WHEN invalid_object_definition THEN  -- "would overlap": the day is covered
        RETURN false;
    END;
    RETURN true;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_ensure_partitions(p_from date, p_to date)
 RETURNS TABLE(parent text, day date)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_parent regclass;
    v_day date;
BEGIN
    FOR v_parent IN SELECT p.partrelid::regclass FROM pg_partitioned_table p
                    JOIN pg_class c ON c.oid = p.partrelid
                    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                    WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition
                      AND a.atttypid <> 'date'::regtype
                    ORDER BY c.relname LOOP
        FOR v_day IN SELECT d::date FROM generate_series(p_from, p_to, interval '1 day') d LOOP
            IF relayforge_ensure_partition(v_parent, v_day) THEN
                parent := v_parent::text;
                day := v_day;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_fan_out_destinations(p_tenant uuid)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT jsonb_agg(jsonb_build_object(
               'id', d.id, 'filter', d.filter::text, 'max_concurrency', d.max_concurrency,
               'rate_limit_per_second', d.rate_limit_per_second, 'circuit', d.circuit,
               'paused', d.paused))::text
    FROM destinations d
    WHERE d.tenant_id = p_tenant AND d.enabled AND d.kind = 'events'
$function$
CREATE OR REPLACE FUNCTION public.relayforge_generation(p_day date, p_span integer)
 RETURNS date
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT date '1970-01-01' + ((p_day - date '1970-01-01') / p_span) * p_span
$function$
CREATE OR REPLACE FUNCTION public.relayforge_generation_claim_days(p_at timestamp with time zone, p_span integer)
 RETURNS date[]
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE WHEN p_at >= ((g + p_span)::timestamp AT TIME ZONE 'UTC') - interval '10 minutes'
                THEN ARRAY[g, g + p_span] ELSE ARRAY[g] END
    FROM (SELECT relayforge_generation((p_at AT TIME ZONE 'UTC')::date, p_span) AS g) s
$function$
CREATE OR REPLACE FUNCTION public.relayforge_inbox_metadata(i webhook_inbox)
 RETURNS TABLE(source text, event_type text, provider_event_id text, dedup_key text, request_id text)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT coalesce(i.source, j.source),
           CASE WHEN j.first_inbox_id = i.id THEN j.event_type ELSE i.event_type END,
           CASE WHEN j.first_inbox_id = i.id THEN j.provider_event_id
                ELSE i.provider_event_id END,
           coalesce(i.dedup_key, j.dedup_key,
                    'hash:' || (SELECT coalesce(f.payload_hash, encode(sha256(f.body), 'hex'))
                                FROM webhook_inbox f WHERE f.id = j.first_inbox_id)),
           CASE WHEN j.first_inbox_id = i.id THEN coalesce(i.request_id, j.correlation_id)
                ELSE i.request_id END
    FROM (SELECT) AS one LEFT JOIN jobs j ON j.id = i.job_id
$function$
CREATE OR REPLACE FUNCTION public.relayforge_job_key(p_tenant uuid, p_source text, p_dedup_key text)
 RETURNS uuid
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE STRICT
AS $function$
    SELECT encode(substring(sha256(uuid_send(p_tenant)
                                   || decode(replace(p_source, '\', '\\'), 'escape')
                                   || '\x00'::bytea
                                   || decode(replace(p_dedup_key, '\', '\\'), 'escape'))
                            FROM 1 FOR 16), 'hex')::uuid
$function$
CREATE OR REPLACE FUNCTION public.relayforge_jobs_notify_new()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE message_due_at IS NOT NULL) THEN
        PERFORM pg_notify('relayforge_outbox', '');
    END IF;
    RETURN NULL;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_oldest_row(p_parent regclass)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_key text;
    v_uuid boolean;
    v_at timestamptz;
BEGIN
    SELECT a.attname, a.atttypid = 'uuid'::regtype INTO v_key, v_uuid
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = p_parent;
    EXECUTE format(CASE WHEN v_uuid THEN 'SELECT relayforge_uuid7_time(%1$I) FROM %2$s '
                                         'ORDER BY %1$I LIMIT 1'
                        ELSE 'SELECT min(%1$I) FROM %2$s' END, v_key, p_parent) INTO v_at;
    RETURN v_at;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_operational_event(p_destination uuid, p_type text, p_data jsonb, p_attempts integer)
 RETURNS uuid
 LANGUAGE plpgsql
AS $function$
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
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_outbox_hand_over()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    UPDATE jobs
    SET message_due_at = NEW.available_at, trace_context = NEW.headers
    WHERE id = NEW.job_id AND attempts = NEW.attempt - 1
      AND status IN ('pending', 'queued', 'retrying');
    DELETE FROM outbox_messages WHERE id = NEW.id;
    RETURN NULL;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_outbox_notify()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM pg_notify('relayforge_outbox', '');
    RETURN NULL;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_partition_adopt(p_table text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_old text := p_table || '_old';
    v_until date;
    v_name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM partitions.adoptions WHERE table_name = p_table) THEN
        EXECUTE format('DROP TABLE partitions.%I', v_old);  -- empty when bounded
    ELSE
        v_until := (SELECT until_day FROM partitions.adoptions WHERE table_name = p_table);
        v_name := p_table || '_before_'
                  || coalesce(to_char(v_until, 'YYYYMMDD'), 'partitioning');
        EXECUTE format('ALTER TABLE partitions.%I RENAME TO %I', v_old, v_name);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION partitions.%I '
                       'FOR VALUES FROM (MINVALUE) TO (%s)', p_table, v_name,
                       coalesce(relayforge_partition_bound(p_table::regclass, v_until),
                                'MAXVALUE'));
        EXECUTE format('ALTER TABLE partitions.%I DROP CONSTRAINT IF EXISTS %I', v_name,
                       p_table || '_before_partitioning');
    END IF;
    PERFORM relayforge_ensure_partition(p_table::regclass, d::date)
    FROM generate_series((now() AT TIME ZONE 'UTC')::date - 1,
                         (now() AT TIME ZONE 'UTC')::date + 3, interval '1 day') d;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_partition_begin(p_table text, p_key text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_views text[][] := ARRAY(
        SELECT ARRAY[v.oid::regclass::text, pg_get_viewdef(v.oid)]
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
        JOIN pg_class v ON v.oid = r.ev_class
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = p_table::regclass
          AND v.oid <> p_table::regclass AND v.relkind = 'v'
        GROUP BY v.oid);
BEGIN
    EXECUTE format('ALTER TABLE %I SET SCHEMA partitions', p_table);
    EXECUTE format('ALTER TABLE partitions.%I RENAME TO %I', p_table, p_table || '_old');
    EXECUTE format('CREATE TABLE %I (LIKE partitions.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   'INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (%I)',
                   p_table, p_table || '_old', p_key);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I', p_table,
                   p_table || '_before_partitioning');  -- the old table's bound, not its own
    FOR i IN 1 .. coalesce(array_length(v_views, 1), 0) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', v_views[i][1], v_views[i][2]);
    END LOOP;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_partition_bound(p_parent regclass, p_day date)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE WHEN a.atttypid = 'uuid'::regtype
                THEN quote_literal(relayforge_uuid7_floor(p_day::timestamp AT TIME ZONE 'UTC'))
                ELSE quote_literal(p_day::timestamp AT TIME ZONE 'UTC') END
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = p_parent
$function$
CREATE OR REPLACE FUNCTION public.relayforge_partition_prepare(p_table text, p_key text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_until date := (now() AT TIME ZONE 'UTC')::date + 7;
    v_uuid boolean := (SELECT atttypid = 'uuid'::regtype FROM pg_attribute
                       WHERE attrelid = p_table::regclass AND attname = p_key);
    v_bound text;
    v_beyond boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', p_table) INTO v_beyond;
    IF NOT v_beyond THEN
        RETURN;  -- empty
    END IF;
    v_bound := CASE WHEN v_uuid
                    THEN quote_literal(relayforge_uuid7_floor(v_until::timestamp AT TIME ZONE 'UTC'))
                    ELSE quote_literal(v_until::timestamp AT TIME ZONE 'UTC') END;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %s)', p_table, p_key, v_bound)
        INTO v_beyond;
    IF v_beyond THEN
        RAISE NOTICE '% holds keys beyond %: it stays one open-ended partition', p_table, v_until;
        INSERT INTO partitions.adoptions VALUES (p_table, NULL);
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I < %s) NOT VALID',
                   p_table, p_table || '_before_partitioning', p_key, v_bound);
    INSERT INTO partitions.adoptions VALUES (p_table, v_until);
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_partition_prove()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
             WHERE conname LIKE '%\_before\_partitioning' AND NOT convalidated LOOP
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v.tbl, v.conname);
    END LOOP;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_retry(p_why text)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION 'try again: %', p_why USING ERRCODE = 'serialization_failure';
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_secrets_notify()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM pg_notify('relayforge_secrets', '');
    RETURN NULL;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_sources_notify()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM pg_notify('relayforge_sources', coalesce(NEW.tenant_id, OLD.tenant_id)::text);
    RETURN NULL;
END $function$
CREATE OR REPLACE FUNCTION public.relayforge_uuid7()
 RETURNS uuid
 LANGUAGE sql
AS $function$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
        substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$function$
CREATE OR REPLACE FUNCTION public.relayforge_uuid7_floor(p_at timestamp with time zone)
 RETURNS uuid
 LANGUAGE sql
 STABLE
AS $function$
    SELECT (lpad(to_hex(floor(extract(epoch FROM p_at) * 1000)::bigint), 12, '0')
            || repeat('0', 20))::uuid
$function$
CREATE OR REPLACE FUNCTION public.relayforge_uuid7_time(p_id uuid)
 RETURNS timestamp with time zone
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE WHEN ms < 253402300800000 THEN to_timestamp(ms / 1000.0) END
    FROM (SELECT ('x' || lpad(left(replace(p_id::text, '-', ''), 12), 16, '0'))::bit(64)::bigint
          AS ms) m
$function$
