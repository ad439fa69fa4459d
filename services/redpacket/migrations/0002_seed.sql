-- API.md seed: users 1..1000, each with a wallet of 100000 cents.
INSERT INTO wallets (user_id, initial_cents, balance_cents)
SELECT u, 100000, 100000 FROM generate_series(1, 1000) AS u;
