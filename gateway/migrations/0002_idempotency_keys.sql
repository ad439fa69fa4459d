-- Idempotency-Key records of POST /api/orders, durable so a key replays its first answer
-- across restarts of anything. A row is claimed by the request executing it (`owner`,
-- until `claimed_until`), keeps the order id the gateway assigned for every attempt, and
-- gets its answer (`status`, `body` as the JSON text sent, `location`) once one is final.
CREATE TABLE idempotency_keys (
    key           text PRIMARY KEY,
    body_hash     text NOT NULL,
    order_id      text NOT NULL,
    owner         text,
    claimed_until timestamptz,
    status        integer CHECK (status < 500),
    body          text,
    location      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT answered_or_open CHECK ((status IS NULL) = (body IS NULL)),
    CONSTRAINT claimed_until_owned CHECK ((owner IS NULL) = (claimed_until IS NULL))
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
