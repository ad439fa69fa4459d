-- API.md seed: SKU-0001..SKU-0100, stock 1000 each, SKU-000n costs n * 100 cents.
INSERT INTO products (sku, name, price_cents, initial_stock, available)
SELECT format('SKU-%s', lpad(n::text, 4, '0')), format('Product %s', n), n * 100, 1000, 1000
FROM generate_series(1, 100) AS n;
