-- API.md seed: users 1..1000.
INSERT INTO customers (user_id) SELECT u FROM generate_series(1, 1000) AS u;
