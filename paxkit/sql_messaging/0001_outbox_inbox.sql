-- Transactional outbox: an event row committed in the same local transaction as the
-- business change; the relay publishes it and marks it sent (at-least-once).
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    message_id  uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    routing_key text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Inbox: one row per consumed message, written in the handler's transaction, so a
-- redelivered message finds its row and has no second effect (exactly-once effect).
CREATE TABLE inbox (
    message_id  uuid NOT NULL,
    consumer    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, consumer)
);
