-- The row count, and the non-NULL count of each column named by the caller.
SELECT count(*) AS row_count, {non_null_counts}
FROM {table};
