-- What a delivery's request is made of, by destination and job: the destination (and its
-- limits), the event, the original body and its content type, and the signing secrets (the
-- current one and those whose overlap hasn't ended). Read when deliveries start, whether by
-- the start itself or by the fan-out that starts them.
CREATE VIEW delivery_requests AS
SELECT d.id AS destination_id, j.id AS job_id, d.url, d.payload, d.timeout_ms, d.headers_nonce,
       d.headers_ciphertext, d.max_concurrency, d.rate_limit_per_second, j.source,
       j.event_type, j.event, i.body, i.headers ->> 'content-type' AS content_type,
       ARRAY(SELECT k.nonce FROM destination_secrets k WHERE k.destination_id = d.id
             AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.created_at DESC)
           AS secret_nonces,
       ARRAY(SELECT k.ciphertext FROM destination_secrets k WHERE k.destination_id = d.id
             AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.created_at DESC)
           AS secret_ciphertexts
FROM destinations d
CROSS JOIN jobs j
LEFT JOIN webhook_inbox i ON i.id = j.first_inbox_id;
