-- Mode paxos (coordinator/paxoscommit.py): Paxos Commit over 2PC branches.
ALTER TABLE orders DROP CONSTRAINT orders_mode_check;
ALTER TABLE orders ADD CONSTRAINT orders_mode_check
    CHECK (mode IN ('2pc', 'tcc', 'saga', 'msg', 'naive', 'paxos'));
ALTER TABLE orders DROP CONSTRAINT orders_txn_mode_check;
ALTER TABLE orders ADD CONSTRAINT orders_txn_mode_check
    CHECK (txn_mode IN ('2pc', 'tcc', 'saga', 'msg', 'naive', 'paxos'));
