-- Rows beyond the first for each key value, and how many key values repeat.
SELECT coalesce(sum(n - 1), 0)::bigint AS extra_rows, count(*) AS repeated_keys
FROM (
    SELECT count(*) AS n
    FROM {table}
    GROUP BY {key}
    HAVING count(*) > 1
) AS repeated;
