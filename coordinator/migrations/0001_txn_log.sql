-- The global transaction log. Under presumed abort only a commit decision must be durable;
-- every other write here is made with synchronous_commit off.
CREATE TABLE global_txns (
    gtid              text PRIMARY KEY,
    mode              text NOT NULL,
    status            text NOT NULL
                      CHECK (status IN ('preparing', 'committing', 'committed', 'aborting', 'aborted')),
    reason            text,
    branches          jsonb NOT NULL,
    lease_until       timestamptz NOT NULL,
    recovery_attempts integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX global_txns_unfinished ON global_txns (lease_until)
    WHERE status IN ('preparing', 'committing', 'aborting');
CREATE INDEX global_txns_recent ON global_txns (created_at DESC);

-- The timeline of every branch call: operation, outcome, error.
CREATE TABLE branch_events (
    id      bigserial PRIMARY KEY,
    gtid    text NOT NULL,
    branch  text NOT NULL,
    op      text NOT NULL,
    outcome text NOT NULL,
    detail  text,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX branch_events_gtid ON branch_events (gtid, id);
