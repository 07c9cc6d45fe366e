#!/usr/bin/env bash
# Dagster's own storage (runs, event log, schedules): a login role `dagster` that owns a database
# `dagster` on the same server, and nothing else. Runs as the superuser ($POSTGRES_USER), after the
# companydata files, both as /docker-entrypoint-initdb.d of the postgres:15 image and from testkit's
# local cluster. The password comes from DAGSTER_DB_PASSWORD (development default: `dagster`, the
# login name, like the other roles).
#
# `dagster` has no privilege in `companydata`: 20-privileges.sql revoked CONNECT (and everything
# else) from PUBLIC there and grants name the stage roles only; the REVOKE below says so explicitly.
# The stages' own work (ETL, training, scoring) runs inside the orchestrator under their own roles
# (etl_user, ds_user, mle_user), never as `dagster`. No other role may connect to `dagster`.
#
# Idempotent, unlike the companydata files: on a database volume made before this file existed
# (the image runs initdb.d only on a new volume), apply it by hand:
#   docker compose exec operational-db bash /docker-entrypoint-initdb.d/60-dagster.sh
# A re-run resets the password to DAGSTER_DB_PASSWORD and changes nothing else.
# No `set` here: the image may source this file rather than execute it (psql's exit status is ours).

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v dagster_password="${DAGSTER_DB_PASSWORD:-dagster}" <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dagster') AS dagster_role_missing \gset
\if :dagster_role_missing
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\else
ALTER ROLE dagster LOGIN PASSWORD :'dagster_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\endif

-- CREATE DATABASE cannot run inside a transaction block: psql runs each statement on its own.
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = 'dagster') AS dagster_db_missing \gset
\if :dagster_db_missing
CREATE DATABASE dagster OWNER dagster;
\else
ALTER DATABASE dagster OWNER TO dagster;
\endif
-- Only its owner (and the superuser) connects to it.
REVOKE ALL ON DATABASE dagster FROM PUBLIC;

-- Nothing in companydata (this connection's database): PUBLIC has no grant there either.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM dagster', current_database());
END
$$;
REVOKE ALL ON SCHEMA public FROM dagster;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM dagster;
SQL
