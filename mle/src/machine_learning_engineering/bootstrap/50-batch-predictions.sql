-- The daily batch scores (orchestration's `batch_predictions` asset): every client in
-- feature_store scored by the champion, one day (partition) at a time. Written as mle_user,
-- which may INSERT and DELETE here, so re-running a day replaces it (delete + insert in one
-- transaction), and may read partition_date alone: PostgreSQL needs SELECT on the columns a
-- DELETE's WHERE names. No UPDATE, TRUNCATE, TRIGGER or REFERENCES, and no reading the scores
-- back. The data scientist reads them. Owned by the bootstrap's superuser, so no application
-- role can alter the table. in_distribution is the model version's out-of-distribution verdict
-- on the client's features (NULL: the version has no gate); 90-batch-ood.sql adds it to a table
-- made before it existed.
CREATE TABLE batch_predictions (
    partition_date  date             NOT NULL,
    client_idx      bigint           NOT NULL,
    label           int              NOT NULL CHECK (label IN (0, 1)),
    probability     double precision NOT NULL CHECK (probability BETWEEN 0 AND 1),
    model_version   text             NOT NULL,
    scored_at       timestamptz      NOT NULL DEFAULT now(),
    in_distribution boolean,
    PRIMARY KEY (partition_date, client_idx)
);

GRANT INSERT, DELETE ON batch_predictions TO mle_user_role;
GRANT SELECT (partition_date) ON batch_predictions TO mle_user_role;
GRANT SELECT ON batch_predictions TO ds_user_role;
