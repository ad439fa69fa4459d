-- Stock per SKU. Conservation is a constraint: available + frozen + sold = initial_stock.
CREATE TABLE products (
    sku           text PRIMARY KEY,
    name          text NOT NULL,
    price_cents   bigint NOT NULL CHECK (price_cents >= 0),
    initial_stock integer NOT NULL CHECK (initial_stock >= 0),
    available     integer NOT NULL CHECK (available >= 0),
    frozen        integer NOT NULL DEFAULT 0 CHECK (frozen >= 0),
    sold          integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_conserved CHECK (available + frozen + sold = initial_stock)
);

-- The stock ledger: each order's effect on each SKU.
CREATE TABLE stock_movements (
    order_id   text NOT NULL,
    sku        text NOT NULL REFERENCES products (sku),
    qty        integer NOT NULL CHECK (qty > 0),
    state      text NOT NULL CHECK (state IN ('frozen', 'sold', 'released')),
    gtid       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX stock_movements_gtid ON stock_movements (gtid);
