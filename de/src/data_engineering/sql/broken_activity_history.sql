-- Rows whose period does not end where the client's next period starts: gaps, overlaps,
-- and an open (current) row followed by a later one.
SELECT idx, valid_from, valid_to, next_valid_from
FROM (
    SELECT idx, valid_from, valid_to,
           lead(valid_from) OVER (PARTITION BY idx ORDER BY valid_from) AS next_valid_from
    FROM {table}
) AS history
WHERE next_valid_from IS NOT NULL
  AND valid_to IS DISTINCT FROM next_valid_from
ORDER BY idx, valid_from
LIMIT 5;
