-- Brute force on the login: per address, 50 tries at once, then 10 a second (an operator
-- can change or drop it like any rule; the per-user limit is built into the route).
INSERT INTO rate_limit_rules (name, route, rate_per_s, burst, scope, updated_by)
VALUES ('login', '/api/auth/token', 10, 50, 'client', 'seed');
