-- Per-client API keys (`python -m deployment.keys`). Only a hash of each key is stored
-- (argon2id); the key itself is shown once, when it is created. api_admin creates and
-- revokes keys; mle_user (the API) only reads them to check a request's key.
CREATE TABLE api_keys (
    name       text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    key_id     text        NOT NULL UNIQUE,      -- the key's public prefix: finds the row to verify
    key_hash   text        NOT NULL,             -- argon2id, PHC string format
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

GRANT SELECT ON api_keys TO mle_user_role;
GRANT SELECT, INSERT ON api_keys TO api_admin;
GRANT UPDATE (revoked_at) ON api_keys TO api_admin;
