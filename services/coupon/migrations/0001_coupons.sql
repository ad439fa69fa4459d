-- Coupons; a used or reserved coupon names the one order holding it.
CREATE TABLE coupons (
    coupon_id       text PRIMARY KEY,
    user_id         integer NOT NULL,
    discount_cents  bigint NOT NULL CHECK (discount_cents > 0),
    min_spend_cents bigint NOT NULL CHECK (min_spend_cents >= 0),
    status          text NOT NULL DEFAULT 'available'
                    CHECK (status IN ('available', 'reserved', 'used')),
    order_id        text,
    gtid            text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT held_by_an_order CHECK ((status = 'available') = (order_id IS NULL))
);
CREATE INDEX coupons_user ON coupons (user_id);
CREATE UNIQUE INDEX coupons_order ON coupons (order_id) WHERE order_id IS NOT NULL;
