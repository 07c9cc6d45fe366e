-- The out-of-distribution gate's verdict on each batch score (orchestration's `batch_predictions`
-- asset, docs/orchestration.md): in_distribution, NULL when the scoring model version has no
-- gate. 50-batch-predictions.sql creates the column with the table; this file adds it to a
-- `batch_predictions` table made before it existed.
--
-- Idempotent, unlike 50-batch-predictions.sql: the postgres image runs /docker-entrypoint-initdb.d
-- only on a new volume, so on a database volume created before this file existed apply it once
-- by hand (until then batch scoring fails, naming this file, and the day keeps what it held):
--   docker compose exec operational-db psql -U admin -d companydata -f /docker-entrypoint-initdb.d/90-batch-ood.sql
-- A re-run changes nothing. mle_user's table-wide INSERT (50-batch-predictions.sql) covers the
-- new column; it still reads partition_date alone. ds_user_role's and monitor_user's table-wide
-- SELECT cover it too.
ALTER TABLE batch_predictions
    ADD COLUMN IF NOT EXISTS in_distribution boolean;

COMMENT ON COLUMN batch_predictions.in_distribution IS
    'The out-of-distribution gate''s verdict on the client''s features; NULL when the model version has no gate';
