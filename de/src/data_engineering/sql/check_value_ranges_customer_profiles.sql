-- Rows outside the ranges data_engineering owns, learned from the generator and the challenge's
-- real files (shared/challenge-data). One column per rule, named after it: the number of rows
-- breaking it. NULLs pass here; the null-share check judges them. A rule named "seen: ..."
-- is the domain observed so far (value_domain, a warning: new categories and wider ranges in real
-- data are scored, not refused); the others are invariants (value_ranges, an error).
SELECT count(*) FILTER (WHERE idx < 0) AS "idx >= 0",
       count(*) FILTER (WHERE attr_a NOT BETWEEN 1 AND 5) AS "seen: attr_a in 1..5",
       count(*) FILTER (WHERE attr_b NOT IN ('a', 'b', 'c', 'd')) AS "seen: attr_b in a, b, c, d",
       count(*) FILTER (WHERE attr_c NOT IN ('yes', 'no')) AS "seen: attr_c in yes, no"
FROM {table};
