-- The gateway's control plane: degradation level, manual switch settings, rate-limit
-- rules and the log of every change. Redis keeps nothing on disk, so this is the durable
-- copy; every gateway instance holds it in memory and reloads it when `version` moves.

CREATE TABLE control_state (
    id          integer PRIMARY KEY CHECK (id = 1),
    version     bigint NOT NULL,
    level       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO control_state (id, version, level) VALUES (1, 0, 'normal');

-- A row exists only for a switch set by hand; it wins over the level and the breakers.
CREATE TABLE switch_overrides (
    name        text PRIMARY KEY,
    is_on       boolean NOT NULL,
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rate_limit_rules (
    name        text PRIMARY KEY,
    route       text NOT NULL,
    rate_per_s  double precision NOT NULL CHECK (rate_per_s > 0),
    burst       integer NOT NULL CHECK (burst >= 1),
    scope       text NOT NULL CHECK (scope IN ('client', 'global')),
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Who changed what, when: one row per admin change, with the state before and after.
CREATE TABLE control_changes (
    id          bigserial PRIMARY KEY,
    version     bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    address     text,
    kind        text NOT NULL CHECK (kind IN ('switch', 'level', 'ratelimit')),
    target      text NOT NULL,
    before      jsonb,
    after       jsonb
);
CREATE INDEX control_changes_at ON control_changes (at DESC);
