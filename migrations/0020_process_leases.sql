-- The processes sharing the deployment's limits. Each ingest and consume process holds a lease
-- here, renewed every second; a limit is split evenly among the live leases of its kind, so N
-- processes together allow what one is configured for. A process that stops deletes its lease;
-- one that dies lets it expire (a few seconds), and the others take its share back. A handful
-- of rows, updated in place.
CREATE TABLE process_leases (
    id         text PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('ingest', 'consume')),
    expires_at timestamptz NOT NULL
);
