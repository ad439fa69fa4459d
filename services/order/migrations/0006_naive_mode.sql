-- The `naive` baseline (paxkit/naive.py): an order placed with no protocol at all. Its
-- mode and its txn_mode are both `naive`; no coordinator ever hears of its gtid.
ALTER TABLE orders DROP CONSTRAINT orders_mode_check;
ALTER TABLE orders ADD CONSTRAINT orders_mode_check
    CHECK (mode IN ('2pc', 'tcc', 'saga', 'msg', 'naive'));
ALTER TABLE orders DROP CONSTRAINT orders_txn_mode_check;
ALTER TABLE orders ADD CONSTRAINT orders_txn_mode_check
    CHECK (txn_mode IN ('2pc', 'tcc', 'saga', 'msg', 'naive'));
