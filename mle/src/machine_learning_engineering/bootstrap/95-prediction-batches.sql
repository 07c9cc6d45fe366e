-- The prediction log's batch records and its one view (docs/monitoring.md#the-prediction-log).
-- A logged request of more than one row (/predict/batch, or any predict_with_logging of several
-- rows) is ONE row of prediction_batches, its per-prediction values as arrays in row order:
-- PostgreSQL's cost is per stored row and index entry (predictions has four indexes and two
-- jsonb columns: 10-15 µs of server CPU a row), so a 10,000-row request costs about what one
-- row of `predictions` costs, plus its arrays. A one-row request stays one row of predictions.
-- The view prediction_log shows every prediction of both tables, one row each.
--
-- 30-predictions.sql includes this file, so a new database has all of it from the start.
-- Idempotent, unlike 30-predictions.sql: the postgres image runs /docker-entrypoint-initdb.d
-- only on a new volume, so on a database volume created before this file existed apply it once
-- by hand (an API that logs batches buffers, then spools, its records, and says which file is
-- missing, until then):
--   docker compose exec operational-db psql -U admin -d companydata -f /docker-entrypoint-initdb.d/95-prediction-batches.sql
-- A re-run changes nothing. Once monitor_user exists (80-monitoring.sh), its grants and
-- monitoring.request_labels are brought to what 80-monitoring.sh makes, whichever file ran last.
--
-- mle_user may INSERT into prediction_batches and nothing else (no SELECT, UPDATE, DELETE,
-- TRUNCATE, TRIGGER or REFERENCES), as in predictions; ds_user_role and monitor_user read it
-- and the view. Owned by the bootstrap's superuser, so no application role can alter either.
--
--   batch_id        made by the client (UUIDv7, like prediction ids): a retried write lands once
--   rows            the request's number of predictions; every array below holds that many
--   client_idx, label, probability, in_distribution
--                   one element per prediction, in the request's order (probability NULL for a
--                   model without one, in_distribution NULL when the version has no gate)
--   features        an object of arrays, one per feature, `rows` long: the values as a single
--                   prediction's `features` holds them (numbers, category text, null if missing)
--   ood_reasons     sparse: an object keyed by the 1-based position (batch_row, as text) of each
--                   row the gate gave reasons for, each a JSON array of strings; a row absent
--                   has none ([]). NULL only when the writer had no verdicts at all.
SET client_min_messages = warning;  -- a re-run's "already exists, skipping" notices

CREATE TABLE IF NOT EXISTS public.prediction_batches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        uuid        NOT NULL UNIQUE,
    model_version   text        NOT NULL,
    api_key         text,                         -- the key's name, 'API_TOKEN', or NULL (open API)
    predicted_at    timestamptz NOT NULL,
    logged_at       timestamptz NOT NULL DEFAULT now(),
    rows            integer     NOT NULL CHECK (rows > 0),
    -- Cheap integrity: an array of another length is refused (the writer dead-letters it).
    client_idx      bigint[]    NOT NULL CHECK (cardinality(client_idx) = rows),
    label           smallint[]  NOT NULL CHECK (cardinality(label) = rows),
    probability     double precision[] CHECK (cardinality(probability) = rows),
    in_distribution boolean[]   CHECK (cardinality(in_distribution) = rows),
    features        jsonb       NOT NULL CHECK (
        jsonb_typeof(features) = 'object'
        AND NOT jsonb_path_exists(features, 'strict $.* ? (@.type() != "array" || @.size() != $n)', jsonb_build_object('n', rows))
    ),
    ood_reasons     jsonb       CHECK (jsonb_typeof(ood_reasons) = 'object')
);
CREATE INDEX IF NOT EXISTS prediction_batches_predicted_at ON public.prediction_batches (predicted_at);

-- lz4 compresses the arrays (out of line, in TOAST) with less CPU than the default pglz, on
-- writing and reading (docs/serving.md#the-prediction-log); a server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE public.prediction_batches
        ALTER COLUMN client_idx SET COMPRESSION lz4, ALTER COLUMN label SET COMPRESSION lz4,
        ALTER COLUMN probability SET COMPRESSION lz4, ALTER COLUMN in_distribution SET COMPRESSION lz4,
        ALTER COLUMN features SET COMPRESSION lz4, ALTER COLUMN ood_reasons SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'prediction_batches: this server has no lz4; its arrays are compressed with pglz';
END
$$;

-- Every prediction, one row each, from both tables. security_invoker: a role reads through the
-- view only what it may read in the tables (mle_user: nothing). source is 'request' (a row of
-- predictions) or 'batch'; prediction_id is NULL for a batch's rows, batch_id and batch_row
-- (1-based position in the request) NULL for a request's. A batch's features and reasons are
-- expanded once per batch and zipped with its arrays by one unnest: a lookup per row into a
-- compressed value would decompress the whole value for every row.
CREATE OR REPLACE VIEW public.prediction_log WITH (security_invoker = true) AS
SELECT 'request'::text AS source,
       p.prediction_id,
       NULL::uuid AS batch_id,
       NULL::integer AS batch_row,
       p.client_idx,
       p.label,
       p.probability,
       p.model_version,
       p.features,
       p.api_key,
       p.predicted_at,
       p.logged_at,
       p.in_distribution,
       p.ood_reasons
FROM public.predictions AS p
UNION ALL
SELECT 'batch'::text,
       NULL::uuid,
       b.batch_id,
       u.batch_row::integer,
       u.client_idx,
       u.label,
       u.probability,
       b.model_version,
       u.features,
       b.api_key,
       b.predicted_at,
       b.logged_at,
       u.in_distribution,
       u.ood_reasons
FROM public.prediction_batches AS b
CROSS JOIN LATERAL (
    SELECT array_agg(r.features ORDER BY r.i) AS features
    FROM (SELECT e.i, jsonb_object_agg(f.key, e.value) AS features
          FROM jsonb_each(b.features) AS f (key, value)
          CROSS JOIN LATERAL jsonb_array_elements(f.value) WITH ORDINALITY AS e (value, i)
          GROUP BY e.i) AS r
) AS per_row
CROSS JOIN LATERAL (
    SELECT array_agg(coalesce(r.value, '[]'::jsonb) ORDER BY g.i) AS reasons
    FROM generate_series(1, b.rows) AS g (i)
    LEFT JOIN jsonb_each(b.ood_reasons) AS r (key, value) ON r.key = g.i::text
    WHERE b.ood_reasons IS NOT NULL
) AS flagged
CROSS JOIN LATERAL unnest(b.client_idx, b.label, b.probability, b.in_distribution, per_row.features, flagged.reasons)
    WITH ORDINALITY AS u (client_idx, label, probability, in_distribution, features, ood_reasons, batch_row);

COMMENT ON TABLE public.prediction_batches IS
    'The prediction log''s requests of more than one row, one row each (arrays); read them through prediction_log';
COMMENT ON VIEW public.prediction_log IS
    'Every logged prediction, one row each: predictions (source request) and prediction_batches (source batch)';

REVOKE ALL ON public.prediction_batches, public.prediction_log FROM PUBLIC;
GRANT INSERT ON public.prediction_batches TO mle_user_role;
GRANT SELECT ON public.prediction_batches, public.prediction_log TO ds_user_role;

-- The drift monitor, once 80-monitoring.sh made it: the same grants and request_labels as that file.
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monitor_user')
   AND EXISTS (SELECT FROM pg_namespace WHERE nspname = 'monitoring') AS monitor_exists \gset
\if :monitor_exists
BEGIN;
SET LOCAL check_function_bodies = off;  -- as in 80-monitoring.sh: labels need not exist yet
GRANT SELECT ON public.prediction_batches, public.prediction_log TO monitor_user;
-- Keep this definition equal to 80-monitoring.sh's (a test compares them).
CREATE OR REPLACE FUNCTION monitoring.request_labels(since timestamptz, until timestamptz)
RETURNS TABLE (client_idx bigint, label integer)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT l.idx::bigint, l.label::integer
    FROM public.labels AS l
    WHERE l.idx IN (
        SELECT p.client_idx FROM public.predictions AS p
        WHERE p.predicted_at >= since AND p.predicted_at < until
        UNION ALL
        SELECT unnest(b.client_idx) FROM public.prediction_batches AS b
        WHERE b.predicted_at >= since AND b.predicted_at < until
    )
$fn$;
ALTER FUNCTION monitoring.request_labels(timestamptz, timestamptz) OWNER TO monitor_reader;
REVOKE ALL ON FUNCTION monitoring.request_labels(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION monitoring.request_labels(timestamptz, timestamptz) TO monitor_user;
COMMIT;
\endif
