-- The trace an event belongs to, carried to its consumers in the message headers.
ALTER TABLE outbox ADD COLUMN traceparent text;
