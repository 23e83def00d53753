-- An accepted delivery's payload hash is the SHA-256 of its body, which the row holds: it is
-- no longer stored beside it (read as encode(sha256(body), 'hex')), nor is its dedup key,
-- which its job holds. Rows refused after their signature verified keep theirs (their body is
-- kept only when configured). No scan, no rewrite.
ALTER TABLE webhook_inbox ALTER COLUMN payload_hash DROP NOT NULL;
