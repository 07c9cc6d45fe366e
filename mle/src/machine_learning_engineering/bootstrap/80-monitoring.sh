#!/usr/bin/env bash
# The drift monitor (the `monitoring` package: `companydata-monitor report`, Dagster's
# `drift_report`): its login, its two tables, and the two narrow windows it has onto the ETL's
# tables. Runs as the superuser ($POSTGRES_USER) after the other files, both as
# /docker-entrypoint-initdb.d of the postgres:15 image and from testkit's local cluster. The
# password comes from MONITOR_DB_PASSWORD (development default: `monitor_user`, the login name,
# like the other roles).
#
#   monitor_user   reads the prediction log (predictions, prediction_batches and the view over both,
#                  prediction_log) and the batch scores (batch_predictions);
#                  reads the features and labels of the clients scored in a period through the two
#                  functions below (in schema `monitoring`), nothing else of the ETL's tables;
#                  replaces a period's rows in monitoring_metrics (SELECT, INSERT, DELETE) and
#                  records alerts in monitoring_alerts (SELECT, INSERT, and UPDATE of the delivery
#                  columns only). No TEMPORARY, no CREATE, no UPDATE/TRUNCATE/TRIGGER/REFERENCES
#                  anywhere else.
#   monitor_reader NOLOGIN, member of ds_user_role: owns the two SECURITY DEFINER functions, so
#                  they read feature_store and labels with the data scientist's SELECT. Nobody
#                  is a member of it, so nobody can act as it.
#
# Why functions and not `GRANT SELECT ON feature_store`: the ETL replaces feature_store and labels
# by swapping in new tables (data_engineering.db.swap_in), and a grant on a table goes with it.
# Only the ETL's default privileges reach the new tables, and those cannot name a table: they
# would give the monitor every table the ETL makes. A plain SQL function names its tables by
# name each time it runs (no `BEGIN ATOMIC` body: that would pin the old table's OID and block
# the swap), so it survives every swap, and it returns no more than the monitor needs.
#
# Idempotent, like 60-dagster.sh: on a database volume made before this file existed, apply it
# by hand; a re-run resets the password to MONITOR_DB_PASSWORD and keeps the recorded metrics:
#   docker compose exec operational-db bash /docker-entrypoint-initdb.d/80-monitoring.sh
# (on a volume older than 95-prediction-batches.sql, apply that file first: this one names its table.)
# No `set` here: the image may source this file rather than execute it (psql's exit status is ours).

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v monitor_password="${MONITOR_DB_PASSWORD:-monitor_user}" \
  -v idle_timeout="${DB_IDLE_IN_TRANSACTION_TIMEOUT:-60s}" <<'SQL'
SET client_min_messages = warning;  -- a re-run's "already exists, skipping" notices
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monitor_user') AS monitor_role_missing \gset
\if :monitor_role_missing
CREATE ROLE monitor_user LOGIN PASSWORD :'monitor_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\else
ALTER ROLE monitor_user LOGIN PASSWORD :'monitor_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\endif
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monitor_reader') AS reader_role_missing \gset
\if :reader_role_missing
CREATE ROLE monitor_reader NOLOGIN IN ROLE ds_user_role;
\endif
ALTER ROLE monitor_user SET idle_in_transaction_session_timeout = :'idle_timeout';
ALTER ROLE monitor_user SET search_path = public;

BEGIN;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO monitor_user', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO monitor_user, monitor_reader;
-- The functions live in their own schema: nothing but the ETL's tables (and the bootstrap's) is in
-- public, where the ETL resolves its names. Only monitor_user may use it.
CREATE SCHEMA IF NOT EXISTS monitoring AUTHORIZATION CURRENT_USER;
REVOKE ALL ON SCHEMA monitoring FROM PUBLIC;
GRANT USAGE ON SCHEMA monitoring TO monitor_user;

-- The period's metrics: replaced as a whole on every run of the period (DELETE + INSERT in one
-- transaction), so a re-run is idempotent. period_end is inclusive: a daily report has
-- period_start = period_end. feature is '' for a metric of the whole source.
CREATE TABLE IF NOT EXISTS monitoring_metrics (
    period_start  date             NOT NULL,
    period_end    date             NOT NULL,
    model_version text             NOT NULL,
    source        text             NOT NULL CHECK (source IN ('requests', 'batch')),
    metric        text             NOT NULL,
    feature       text             NOT NULL DEFAULT '',
    value         double precision,
    computed_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (period_start, period_end, source, metric, feature),
    CHECK (period_end >= period_start)
);

-- One row per breached threshold per period: the unique key is what makes a re-run of the
-- period send no second alert. delivered_at stays NULL until the webhook took it (or while
-- ALERT_WEBHOOK_URL is unset); claimed_at keeps two runs of a period from sending it at once.
CREATE TABLE IF NOT EXISTS monitoring_alerts (
    period_start  date             NOT NULL,
    period_end    date             NOT NULL,
    threshold     text             NOT NULL CHECK (threshold IN ('drift_share', 'ood_rate', 'missing_rate')),
    model_version text             NOT NULL,
    value         double precision NOT NULL,
    limit_value   double precision NOT NULL,
    payload       jsonb            NOT NULL,
    created_at    timestamptz      NOT NULL DEFAULT now(),
    attempts      integer          NOT NULL DEFAULT 0,
    claimed_at    timestamptz,
    delivered_at  timestamptz,
    last_error    text,
    PRIMARY KEY (period_start, period_end, threshold),
    CHECK (period_end >= period_start)
);

REVOKE ALL ON monitoring_metrics, monitoring_alerts FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON monitoring_metrics TO monitor_user;
GRANT SELECT, INSERT ON monitoring_alerts TO monitor_user;
GRANT UPDATE (attempts, claimed_at, delivered_at, last_error) ON monitoring_alerts TO monitor_user;
-- The data scientist reads what the monitor found.
GRANT SELECT ON monitoring_metrics, monitoring_alerts TO ds_user_role;
GRANT SELECT ON predictions, prediction_batches, prediction_log, batch_predictions TO monitor_user;

-- The ETL's tables need not exist yet (a new database): the bodies are checked when they run.
SET LOCAL check_function_bodies = off;

-- feature_store's columns but idx and label, as JSON (whatever the model's features are), and the
-- label, of each client batch-scored from `since` to `until` (dates, inclusive).
CREATE OR REPLACE FUNCTION monitoring.scored_features(since date, until date)
RETURNS TABLE (client_idx bigint, features jsonb, label integer)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT f.idx::bigint, to_jsonb(f) - 'idx' - 'label', l.label::integer
    FROM public.feature_store AS f
    LEFT JOIN public.labels AS l ON l.idx = f.idx
    WHERE f.idx IN (
        SELECT b.client_idx FROM public.batch_predictions AS b
        WHERE b.partition_date BETWEEN since AND until
    )
$fn$;

-- The label of each client the API predicted for between `since` and `until` (timestamps,
-- end excluded), when the labels table has one: single requests and logged batches alike. It
-- reads the two tables, not the view prediction_log, which would expand every batch's features
-- only to be asked for client ids. 95-prediction-batches.sql holds the same definition.
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

ALTER FUNCTION monitoring.scored_features(date, date) OWNER TO monitor_reader;
ALTER FUNCTION monitoring.request_labels(timestamptz, timestamptz) OWNER TO monitor_reader;
REVOKE ALL ON FUNCTION monitoring.scored_features(date, date), monitoring.request_labels(timestamptz, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION monitoring.scored_features(date, date), monitoring.request_labels(timestamptz, timestamptz)
    TO monitor_user;
COMMIT;
SQL
