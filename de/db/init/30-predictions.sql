-- Every production prediction, written by machine_learning_engineering's PredictionLogger as
-- mle_user (all privileges through 20-privileges.sql; ds_user may read it).
CREATE TABLE predictions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prediction_id uuid        NOT NULL UNIQUE,  -- made by the client: retried writes land once
    client_idx    bigint      NOT NULL,
    label         smallint    NOT NULL,
    probability   double precision,
    model_version text        NOT NULL,
    features      jsonb       NOT NULL,
    predicted_at  timestamptz NOT NULL,
    logged_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX predictions_client_idx ON predictions (client_idx);
CREATE INDEX predictions_predicted_at ON predictions (predicted_at);
