-- The coordinator mode an order's transaction actually ran in (an `order_async` 2pc order
-- runs as `msg`), and best-effort notifications of settled orders.
ALTER TABLE orders ADD COLUMN txn_mode text;
UPDATE orders SET txn_mode = mode;
ALTER TABLE orders ALTER COLUMN txn_mode SET NOT NULL;
ALTER TABLE orders ADD CONSTRAINT orders_txn_mode_check
    CHECK (txn_mode IN ('2pc', 'tcc', 'saga', 'msg'));

CREATE TABLE notifications (
    id           bigserial PRIMARY KEY,
    order_id     text NOT NULL UNIQUE REFERENCES orders (order_id),
    url          text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    gave_up_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_due ON notifications (next_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

CREATE TABLE notification_attempts (
    notification_id bigint NOT NULL REFERENCES notifications (id),
    attempt         integer NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    status_code     integer,
    error           text,
    PRIMARY KEY (notification_id, attempt)
);
