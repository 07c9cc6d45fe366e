-- Rows outside the ranges data_engineering owns, learned from the generator and the challenge's
-- real files (shared/challenge-data). One column per rule, named after it: the number of rows
-- breaking it. NULLs pass here; the null-share check judges them.
SELECT count(*) FILTER (WHERE idx < 0) AS "idx >= 0",
       count(*) FILTER (WHERE label NOT IN (0, 1)) AS "label in 0, 1"
FROM {table};
