-- Every production prediction, appended by machine_learning_engineering's PredictionLogger as
-- mle_user, which may INSERT here and nothing else (no SELECT, UPDATE, DELETE, TRUNCATE,
-- TRIGGER or REFERENCES): a compromised API can add to the audit trail, never rewrite it.
-- Owned by the bootstrap's superuser, so no application role can alter the table.
CREATE TABLE predictions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prediction_id uuid        NOT NULL UNIQUE,  -- made by the client: retried writes land once
    client_idx    bigint      NOT NULL,
    label         smallint    NOT NULL,
    probability   double precision,
    model_version text        NOT NULL,
    features      jsonb       NOT NULL,
    api_key       text,                         -- the key's name, 'API_TOKEN', or NULL (open API)
    predicted_at  timestamptz NOT NULL,
    logged_at     timestamptz NOT NULL DEFAULT now(),
    -- The out-of-distribution gate's verdict (NULL: the model version has no gate) and its
    -- reasons, a JSON array of strings (docs/monitoring.md). 70-ood.sql adds both to a
    -- database made before they existed.
    in_distribution boolean,
    ood_reasons   jsonb
);

CREATE INDEX predictions_client_idx ON predictions (client_idx);
CREATE INDEX predictions_predicted_at ON predictions (predicted_at);

-- Records the database refused (a value a column cannot hold): kept with the error, as
-- ASCII-escaped JSON text, so one bad record never blocks the others and is never lost.
CREATE TABLE prediction_dead_letters (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prediction_id text        UNIQUE,            -- as received; retried dead letters land once
    record        text        NOT NULL,
    error         text        NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now()
);

GRANT INSERT ON predictions, prediction_dead_letters TO mle_user_role;
GRANT SELECT ON predictions, prediction_dead_letters TO ds_user_role;

-- A request of more than one row is logged as ONE row of prediction_batches (its values as
-- arrays), and the view prediction_log shows every prediction of both tables, one row each.
-- Both are made by 95-prediction-batches.sql, included here so that a new database has them
-- from the start; the same (idempotent) file brings a database made before them up to date.
\ir 95-prediction-batches.sql
