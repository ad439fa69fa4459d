-- End users' credentials: a salted bcrypt hash per customer, checked by the order service
-- for the gateway's login (POST /credentials/check), never returned and never in clear.
ALTER TABLE customers ADD COLUMN password_hash text;
-- Development seed (docs/api.md): user N's password is `paxmart-N`. The seed's hashes use
-- bcrypt cost 4 so that seeding 1000 users stays under a second; they are development
-- credentials, not a production password policy.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
UPDATE customers SET password_hash = crypt('paxmart-' || user_id, gen_salt('bf', 4));
