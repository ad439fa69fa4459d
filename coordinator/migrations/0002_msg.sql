-- The msg mode: a transaction can be `submitted` (its message committed at the initiator,
-- effects travelling through RabbitMQ), and each branch reports back per operation.
ALTER TABLE global_txns DROP CONSTRAINT global_txns_status_check;
ALTER TABLE global_txns ADD CONSTRAINT global_txns_status_check CHECK (
    status IN ('preparing', 'submitted', 'committing', 'committed', 'aborting', 'aborted'));
DROP INDEX global_txns_unfinished;
CREATE INDEX global_txns_unfinished ON global_txns (lease_until)
    WHERE status IN ('preparing', 'submitted', 'committing', 'aborting');

CREATE TABLE msg_reports (
    gtid        text NOT NULL,
    branch      text NOT NULL,
    op          text NOT NULL CHECK (op IN ('action', 'compensate')),
    ok          boolean NOT NULL,
    reason      text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gtid, branch, op)
);
