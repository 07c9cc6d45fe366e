-- Rows of one month in the published sales table (before the month is replaced).
SELECT count(*) FROM sales WHERE sale_month = %(month)s;
