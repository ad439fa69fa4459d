-- The participant's memory of XA branches. A 'prepared' row is written inside the branch's
-- own prepared transaction (so it exists exactly when the branch committed); an 'aborted'
-- row is a tombstone written by rollback, so a late or duplicate prepare votes no.
CREATE TABLE xa_branch_log (
    gid        text PRIMARY KEY,
    gtid       text NOT NULL,
    state      text NOT NULL CHECK (state IN ('prepared', 'aborted')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX xa_branch_log_gtid ON xa_branch_log (gtid);
