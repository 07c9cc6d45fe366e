#!/usr/bin/env bash
# Creates the login roles of `companydata`. Runs once, as the superuser ($POSTGRES_USER, the
# `admin` owner), both as /docker-entrypoint-initdb.d of the postgres:15 image and from
# `python -m data_engineering.localdb` (tests, `make demo`). Passwords come from the
# environment; the defaults are the documented development ones (password = user name).
# No `set` here: the image may source this file rather than execute it (psql's exit status is ours).

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v ds_password="${DS_DB_PASSWORD:-ds_user}" \
  -v mle_password="${MLE_DB_PASSWORD:-mle_user}" <<'SQL'
CREATE ROLE ds_user_role NOLOGIN;
CREATE ROLE mle_user_role NOLOGIN;
CREATE ROLE ds_user LOGIN PASSWORD :'ds_password' IN ROLE ds_user_role;
CREATE ROLE mle_user LOGIN PASSWORD :'mle_password' IN ROLE mle_user_role;
-- Belt and braces: the data scientist's sessions are read-only by default, on top of the
-- missing privileges below (which are what actually enforce it).
ALTER ROLE ds_user SET default_transaction_read_only = on;
SQL
