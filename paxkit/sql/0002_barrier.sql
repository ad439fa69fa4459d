-- The branch barrier (after DTM's barrier and Seata's TCC fence): one row per
-- (global transaction, branch, operation), written in the same local transaction as the
-- business change. `written_by` tells a row written by the operation itself from the
-- forward-operation row a compensation writes to block a late (hanging) Try/action.
CREATE TABLE barrier (
    gtid       text NOT NULL,
    branch     text NOT NULL,
    op         text NOT NULL CHECK (op IN ('try', 'confirm', 'cancel', 'action', 'compensate')),
    written_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gtid, branch, op)
);
