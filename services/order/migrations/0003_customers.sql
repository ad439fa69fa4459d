-- The order service's own customers: an order names one of them. The order insert checks
-- it itself (INSERT ... SELECT ... WHERE EXISTS: an index probe in the same statement, no
-- lookup of its own); a foreign key would also lock the customer row on every insert.
CREATE TABLE customers (
    user_id    integer PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
