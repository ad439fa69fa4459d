-- The participant's memory of three-phase commit branches (paxkit/threepc.py). CanCommit
-- records a yes vote as 'uncertain', with the deadline of its PreCommit. PreCommit moves it
-- to 'committed' inside the branch's prepared transaction, so that state becomes visible
-- exactly when the branch commits (as xa_branch_log's row). Abort, or the deadline passing,
-- makes it 'aborted'. `by_timeout`: the branch decided on its own, not on the coordinator's
-- word (an uncertain one aborted, a precommitted one committed).
CREATE TABLE threepc_branches (
    gid        text PRIMARY KEY,
    gtid       text NOT NULL,
    state      text NOT NULL CHECK (state IN ('uncertain', 'committed', 'aborted')),
    by_timeout boolean NOT NULL DEFAULT false,
    deadline   timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threepc_branches_gtid ON threepc_branches (gtid);
CREATE INDEX threepc_branches_uncertain ON threepc_branches (deadline) WHERE state = 'uncertain';
CREATE INDEX threepc_branches_created_at ON threepc_branches USING brin (created_at);
