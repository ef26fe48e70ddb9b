-- The cluster's token key: the secret nodes sign consistency tokens with.
--
-- No transition changes here: the state machine is the header of
-- 20261203000004_limits.sql. A database of the previous schema
-- upgrades in place (one new table); work in flight is untouched.
--
-- A node hands out a consistency token as `<epoch>-<hi>/<lo>.<mac>`, the MAC
-- being HMAC-SHA256 (truncated to 128 bits) over the epoch and LSN, keyed
-- with `secret` (src/model/token.rs). Each node loads the key once at start
-- from its own region's database (`Store::token_key`) and verifies tokens in
-- memory. The key lives in the database so that it replicates to every
-- replica and survives a failover: every node of the cluster, in every
-- region, signs and verifies with the same key, and no other cluster's
-- tokens (nor made-up ones) verify.
--
-- The secret is 32 bytes from two gen_random_uuid() (PostgreSQL's strong
-- random source, 244 random bits; pgcrypto is not needed). key_id leaves
-- room for rotation; nodes use the highest key_id. Replacing the key makes
-- every token handed out before it invalid (answered with 400
-- invalid_token), so it needs a restart of every node.

CREATE TABLE swf.token_keys (
    key_id      integer PRIMARY KEY CHECK (key_id >= 1),
    secret      bytea NOT NULL CHECK (octet_length(secret) >= 16),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO swf.token_keys (key_id, secret)
VALUES (1, decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
