-- When the reconciler may look at a pending order again: each check that settles nothing
-- puts the order back in line, so a few orders that stay pending long (a msg backlog)
-- never starve the others.
ALTER TABLE orders ADD COLUMN next_check_at timestamptz;
DROP INDEX orders_pending;
CREATE INDEX orders_pending ON orders (next_check_at NULLS FIRST, created_at)
    WHERE status = 'pending';
