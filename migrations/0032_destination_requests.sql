-- What a delivery's request takes from its destination alone: its URL, settings and the signing
-- secrets in force. A fan-out starts the deliveries of a job it has just started, whose event
-- and body it holds already, so it reads this and not delivery_requests, which reads the job
-- and its first delivery's body again for every delivery. delivery_requests is now this view
-- joined to the job: the same columns, as the release before reads them. No scan, no lock
-- beyond a moment's on the two views.
CREATE VIEW destination_requests AS
SELECT d.id AS destination_id, d.url, d.payload, d.timeout_ms, d.headers_nonce,
       d.headers_ciphertext, d.max_concurrency, d.rate_limit_per_second,
       ARRAY(SELECT k.nonce FROM destination_secrets k WHERE k.destination_id = d.id
             AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.created_at DESC)
           AS secret_nonces,
       ARRAY(SELECT k.ciphertext FROM destination_secrets k WHERE k.destination_id = d.id
             AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.created_at DESC)
           AS secret_ciphertexts
FROM destinations d;

CREATE OR REPLACE VIEW delivery_requests AS
SELECT r.destination_id, j.id AS job_id, r.url, r.payload, r.timeout_ms, r.headers_nonce,
       r.headers_ciphertext, r.max_concurrency, r.rate_limit_per_second, j.source,
       j.event_type, j.event, i.body, i.headers ->> 'content-type' AS content_type,
       r.secret_nonces, r.secret_ciphertexts, j.provider_event_id, j.occurred_at_unix,
       j.data_path
FROM destination_requests r
CROSS JOIN jobs j
LEFT JOIN webhook_inbox i ON i.id = j.first_inbox_id;
