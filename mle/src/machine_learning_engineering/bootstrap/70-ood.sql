-- The out-of-distribution gate's columns of the prediction log (docs/monitoring.md):
-- in_distribution (NULL when the served model version has no gate) and ood_reasons (a JSON
-- array of strings). 30-predictions.sql creates them with the table; this file adds them to a
-- `predictions` table made before they existed.
--
-- Idempotent, unlike 30-predictions.sql: the postgres image runs /docker-entrypoint-initdb.d
-- only on a new volume, so on a database volume created before this file existed apply it once
-- by hand (an API that writes these columns buffers its records, and says which file is
-- missing, until then):
--   docker compose exec operational-db psql -U admin -d companydata -f /docker-entrypoint-initdb.d/70-ood.sql
-- A re-run changes nothing. mle_user's table-wide INSERT (30-predictions.sql) covers new
-- columns; it still has no SELECT, UPDATE, DELETE or TRUNCATE.
ALTER TABLE predictions
    ADD COLUMN IF NOT EXISTS in_distribution boolean,
    ADD COLUMN IF NOT EXISTS ood_reasons jsonb;

COMMENT ON COLUMN predictions.in_distribution IS
    'The out-of-distribution gate''s verdict; NULL when the model version has no gate';
COMMENT ON COLUMN predictions.ood_reasons IS
    'Why the gate judged the row out of distribution: a JSON array of strings';
