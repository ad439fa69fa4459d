-- Retention (paxkit/retention.py): find old rows without a scan of the table (BRIN on the
-- insert-ordered timestamps, next to free on the write path).
CREATE INDEX outbox_created_at ON outbox USING brin (created_at);
CREATE INDEX inbox_received_at ON inbox USING brin (received_at);
