-- API.md seed: users 1..1000, each with C-<user>-1/2/3.
INSERT INTO coupons (coupon_id, user_id, discount_cents, min_spend_cents)
SELECT format('C-%s-%s', u, t.k), u, t.discount, t.min_spend
FROM generate_series(1, 1000) AS u
CROSS JOIN (VALUES (1, 500, 1000), (2, 1000, 5000), (3, 3000, 20000)) AS t (k, discount, min_spend);
