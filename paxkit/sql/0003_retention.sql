-- Retention (paxkit/retention.py) looks for rows older than its horizon. BRIN indexes on
-- these insert-ordered timestamps find them without a scan of the table, and cost next
-- to nothing on the write path.
CREATE INDEX barrier_created_at ON barrier USING brin (created_at);
CREATE INDEX xa_branch_log_created_at ON xa_branch_log USING brin (created_at);
