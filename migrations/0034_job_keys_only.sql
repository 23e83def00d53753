-- relayforge: finishes an upgrade
-- Applied by `relayforge migrate --finish` once every process runs a release that upserts jobs
-- on jobs_key (0033); on a new database, at once. Until then the release before may still be
-- running, and its upsert names jobs_dedup.
ALTER TABLE jobs DROP CONSTRAINT jobs_dedup;
