-- Mode 3pc (three-phase commit, paxkit/threepc.py): accepted where the stack enables it.
ALTER TABLE orders DROP CONSTRAINT orders_mode_check;
ALTER TABLE orders ADD CONSTRAINT orders_mode_check
    CHECK (mode IN ('2pc', 'tcc', 'saga', 'msg', 'naive', 'paxos', '3pc'));
ALTER TABLE orders DROP CONSTRAINT orders_txn_mode_check;
ALTER TABLE orders ADD CONSTRAINT orders_txn_mode_check
    CHECK (txn_mode IN ('2pc', 'tcc', 'saga', 'msg', 'naive', 'paxos', '3pc'));
