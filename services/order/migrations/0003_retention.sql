-- Retention of best-effort notifications (paxkit/notify.py): find old rows without a scan
-- of the table (BRIN on the insert-ordered timestamps).
CREATE INDEX notification_attempts_at ON notification_attempts USING brin (at);
CREATE INDEX notifications_created_at ON notifications USING brin (created_at);
