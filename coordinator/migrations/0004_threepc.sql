-- Mode 3pc (coordinator/drivers.py, ThreePhaseCommit): between its CanCommits and its
-- decision a transaction is `precommitting`, its PreCommits under way.
ALTER TABLE global_txns DROP CONSTRAINT global_txns_status_check;
ALTER TABLE global_txns ADD CONSTRAINT global_txns_status_check CHECK (
    status IN ('preparing', 'precommitting', 'submitted', 'committing', 'committed', 'aborting',
               'aborted'));
DROP INDEX global_txns_unfinished;
CREATE INDEX global_txns_unfinished ON global_txns (lease_until)
    WHERE status IN ('preparing', 'precommitting', 'submitted', 'committing', 'aborting');
-- The audit's search of split outcomes pages through the 3pc transactions by gtid.
CREATE INDEX global_txns_3pc ON global_txns (gtid) WHERE mode = '3pc';
