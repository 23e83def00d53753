-- The operator console's sessions (only hashes: the token's and the API key's), and the log of
-- a job's failed attempts (the console's timeline; a success is the job's own state).
CREATE TABLE console_sessions (
    token_hash text        PRIMARY KEY,
    key_hash   text        NOT NULL,
    csrf_token text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

CREATE TABLE job_attempts (
    job_id      uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    error       text,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);

