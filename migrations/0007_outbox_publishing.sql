-- A row the broker keeps refusing is set aside ('failed') after RELAY__MAX_PUBLISH_FAILURES
-- refusals, its job dead-lettered with the reason, so one unpublishable row never blocks the rest.
ALTER TABLE outbox_messages ADD COLUMN publish_failures integer NOT NULL DEFAULT 0;
ALTER TABLE outbox_messages DROP CONSTRAINT outbox_messages_status_check;
ALTER TABLE outbox_messages ADD CONSTRAINT outbox_messages_status_check
    CHECK (status IN ('pending', 'sent', 'failed'));
-- The relay builds the routing key from the job's source when it publishes (AMQP__ROUTING_PREFIX
-- applies to every row, old ones too), so rows no longer carry one.
ALTER TABLE outbox_messages DROP COLUMN routing_key;
