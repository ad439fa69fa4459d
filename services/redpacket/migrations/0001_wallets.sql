-- Red-packet wallets. Conservation is a constraint: balance + frozen + spent = initial.
CREATE TABLE wallets (
    user_id       integer PRIMARY KEY,
    initial_cents bigint NOT NULL CHECK (initial_cents >= 0),
    balance_cents bigint NOT NULL CHECK (balance_cents >= 0),
    frozen_cents  bigint NOT NULL DEFAULT 0 CHECK (frozen_cents >= 0),
    spent_cents   bigint NOT NULL DEFAULT 0 CHECK (spent_cents >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT money_conserved CHECK (balance_cents + frozen_cents + spent_cents = initial_cents)
);

-- The wallet ledger: each order's hold on a wallet.
CREATE TABLE wallet_holds (
    order_id     text PRIMARY KEY,
    user_id      integer NOT NULL REFERENCES wallets (user_id),
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    state        text NOT NULL CHECK (state IN ('frozen', 'spent', 'refunded')),
    gtid         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_holds_gtid ON wallet_holds (gtid);
