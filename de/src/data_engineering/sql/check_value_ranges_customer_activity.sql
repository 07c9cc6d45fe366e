-- Rows outside the ranges data_engineering owns, learned from the generator and the challenge's
-- real files (shared/challenge-data). One column per rule, named after it: the number of rows
-- breaking it. NULLs pass here; the null-share check judges them. A rule named "seen: ..."
-- is the domain observed so far (value_domain, a warning: new categories and wider ranges in real
-- data are scored, not refused); the others are invariants (value_ranges, an error).
SELECT count(*) FILTER (WHERE idx < 0) AS "idx >= 0",
       count(*) FILTER (WHERE valid_to <= valid_from) AS "valid_to > valid_from",
       count(*) FILTER (WHERE scd_a < 0 OR scd_a > 1 OR scd_a = 'NaN') AS "seen: scd_a in [0, 1]",
       count(*) FILTER (WHERE scd_b NOT BETWEEN 1 AND 5) AS "seen: scd_b in 1..5"
FROM {table};
