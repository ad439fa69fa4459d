-- Retention (coordinator/app.py, paxkit/retention.py): find old timeline and report rows
-- without a scan of the table (BRIN on the insert-ordered timestamps).
CREATE INDEX branch_events_at ON branch_events USING brin (at);
CREATE INDEX msg_reports_received_at ON msg_reports USING brin (received_at);
