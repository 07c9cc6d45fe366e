-- Replace one month in sales and monthly_sales from the staging table. Runs inside the
-- caller's transaction: readers see the old month or the new one, never a mix.
DELETE FROM sales WHERE sale_month = %(month)s;

INSERT INTO sales (sale_month, idx, value, date, store_idx)
SELECT %(month)s, idx, value, date, store_idx
FROM sales_staging;

DELETE FROM monthly_sales WHERE sale_month = %(month)s;

INSERT INTO monthly_sales (store_idx, location, sale_month, value)
SELECT s.store_idx, st.location, s.sale_month, sum(s.value)
FROM sales AS s
JOIN {stores} AS st ON st.idx = s.store_idx
WHERE s.sale_month = %(month)s
GROUP BY s.store_idx, st.location, s.sale_month;
