-- A job is its own outbox entry: while message_due_at is set it owes the message that starts
-- its next attempt (attempts + 1), due from then on, carrying its trace_context. Ingest writes
-- one row per job instead of two, and the relay updates one row per message instead of three
-- (claim, sent, queued): it holds its claim as row locks in a transaction around the publish,
-- so nothing of the claim is written. A message the broker refuses counts in publish_failures
-- (NULL: none).
--
-- The upgrade reads jobs once, to build the index of jobs owing a message (writes to jobs
-- wait meanwhile; both new columns are added without a rewrite).
ALTER TABLE jobs ADD COLUMN message_due_at timestamptz, ADD COLUMN publish_failures integer;
CREATE INDEX jobs_message_due ON jobs (message_due_at, id) WHERE message_due_at IS NOT NULL;

-- A message owed wakes the relay, as an outbox row did: new jobs (a statement of ingest) and
-- jobs given a message later (a retry, a recovery, a reprocess).
CREATE TRIGGER jobs_notify_new AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION relayforge_outbox_notify();
CREATE TRIGGER jobs_notify_message_due AFTER UPDATE OF message_due_at ON jobs
    FOR EACH ROW WHEN (NEW.message_due_at IS NOT NULL
                       AND OLD.message_due_at IS DISTINCT FROM NEW.message_due_at)
    EXECUTE FUNCTION relayforge_outbox_notify();

-- outbox_messages stays while processes of the version before run next to this one (a rolling
-- upgrade): a message they write is handed to its job (if it still waits for that attempt)
-- and the row removed. A later version drops the table. The messages pending now go the same
-- way.
CREATE FUNCTION relayforge_outbox_hand_over() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs
    SET message_due_at = NEW.available_at, trace_context = NEW.headers
    WHERE id = NEW.job_id AND attempts = NEW.attempt - 1
      AND status IN ('pending', 'queued', 'retrying');
    DELETE FROM outbox_messages WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_messages_hand_over AFTER INSERT ON outbox_messages
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION relayforge_outbox_hand_over();

UPDATE jobs j
SET message_due_at = o.available_at, trace_context = o.headers,
    publish_failures = nullif(o.publish_failures, 0)
FROM outbox_messages o
WHERE o.status = 'pending' AND o.job_id = j.id AND o.attempt = j.attempts + 1
  AND j.status IN ('pending', 'queued', 'retrying');
DELETE FROM outbox_messages WHERE status = 'pending';
