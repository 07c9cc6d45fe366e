-- Rows outside the ranges data_engineering owns, learned from the generator and the challenge's
-- real files (shared/challenge-data). One column per rule, named after it: the number of rows
-- breaking it. NULLs pass here; the null-share check judges them.
SELECT count(*) FILTER (WHERE idx < 1) AS "idx >= 1",
       count(*) FILTER (WHERE btrim(location) = '') AS "location not blank"
FROM {table};
