-- Leases with fencing tokens (paxkit/lease.py). A lease row is never deleted: its token is
-- the highest ever granted under that name, and the next grant is token + 1, so a token is
-- never handed out twice, whatever expired, was released or restarted in between.
CREATE TABLE leases (
    name    text PRIMARY KEY,
    owner   text NOT NULL,
    token   bigint NOT NULL CHECK (token > 0),
    expires timestamptz NOT NULL
);
-- The resource side: the highest token each protected resource has accepted a write from.
CREATE TABLE fences (
    resource text PRIMARY KEY,
    token    bigint NOT NULL
);
