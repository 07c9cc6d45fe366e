#!/usr/bin/env bash
# Creates the login roles of `companydata`. Runs once, as the superuser ($POSTGRES_USER, the
# `admin` owner), both as /docker-entrypoint-initdb.d of the postgres:15 image and from
# `python -m data_engineering.localdb` (tests, `make demo`). Passwords come from the
# environment; the defaults are the documented development ones (password = user name).
# No `set` here: the image may source this file rather than execute it (psql's exit status is ours).
#
#   admin      superuser: this bootstrap only; no service logs in as admin
#   etl_user   the ETL: owns the data tables it builds, nothing else
#   ds_user    training and the EDA: reads the data tables and the prediction log
#   mle_user   the API: appends to the prediction log, reads the API-key table
#   api_admin  `python -m deployment.keys`: creates and revokes API keys

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v etl_password="${ETL_DB_PASSWORD:-etl_user}" \
  -v ds_password="${DS_DB_PASSWORD:-ds_user}" \
  -v mle_password="${MLE_DB_PASSWORD:-mle_user}" \
  -v api_admin_password="${API_ADMIN_DB_PASSWORD:-api_admin}" \
  -v idle_timeout="${DB_IDLE_IN_TRANSACTION_TIMEOUT:-60s}" <<'SQL'
-- Every login is explicitly unprivileged: no superuser, no role or database creation, no
-- replication, no row-security bypass. Group roles carry the grants.
CREATE ROLE ds_user_role NOLOGIN;
CREATE ROLE mle_user_role NOLOGIN;
CREATE ROLE etl_user LOGIN PASSWORD :'etl_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE ds_user LOGIN PASSWORD :'ds_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS IN ROLE ds_user_role;
CREATE ROLE mle_user LOGIN PASSWORD :'mle_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS IN ROLE mle_user_role;
CREATE ROLE api_admin LOGIN PASSWORD :'api_admin_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
-- Belt and braces: the data scientist's sessions are read-only by default, on top of the
-- missing privileges (which are what actually enforce it).
ALTER ROLE ds_user SET default_transaction_read_only = on;
-- A reader that forgets an open transaction holds its table locks; the server ends such a
-- session after this long, so it cannot hold up the ETL's swaps for ever. (A hostile session
-- can lower its own setting; the ETL's own lock_timeout bounds that case.)
ALTER ROLE ds_user SET idle_in_transaction_session_timeout = :'idle_timeout';
ALTER ROLE mle_user SET idle_in_transaction_session_timeout = :'idle_timeout';
ALTER ROLE api_admin SET idle_in_transaction_session_timeout = :'idle_timeout';
-- The ETL resolves names in its own schema only (never a "$user" schema someone could create).
ALTER ROLE etl_user SET search_path = public;
SQL
