-- Rows outside the ranges data_engineering owns, learned from the generator and the challenge's
-- real files (shared/challenge-data). One column per rule, named after it: the number of rows
-- breaking it. NULLs pass here; the null-share check judges them. A rule named "seen: ..."
-- is the domain observed so far (value_domain, a warning: new categories and wider ranges in real
-- data are scored, not refused); the others are invariants (value_ranges, an error).
SELECT count(*) FILTER (WHERE idx < 0) AS "idx >= 0",
       count(*) FILTER (WHERE value < 0 OR value = 'NaN') AS "seen: value >= 0",
       count(*) FILTER (WHERE date_trunc('month', date)::date <> sale_month) AS "date in sale_month",
       count(*) FILTER (WHERE extract(day FROM sale_month) <> 1) AS "sale_month is a month start"
FROM {table};
