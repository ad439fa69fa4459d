-- Orders. A 2PC order is inserted 'pending'; its XA branch confirms it, its rollback
-- (or the reconciler) fails it. Items are kept with the price charged.
CREATE TABLE orders (
    order_id         text PRIMARY KEY,
    gtid             text UNIQUE,
    user_id          integer NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('2pc', 'tcc', 'saga', 'msg')),
    status           text NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed')),
    reason           text,
    items            jsonb NOT NULL,
    coupon_id        text,
    total_cents      bigint NOT NULL CHECK (total_cents >= 0),
    discount_cents   bigint NOT NULL CHECK (discount_cents >= 0),
    red_packet_cents bigint NOT NULL CHECK (red_packet_cents >= 0),
    payable_cents    bigint NOT NULL CHECK (payable_cents >= 0),
    notify_url       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reason_iff_failed CHECK ((status = 'failed') = (reason IS NOT NULL))
);
CREATE INDEX orders_user ON orders (user_id, created_at DESC);
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'pending';
