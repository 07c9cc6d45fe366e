-- monthly_sales against what sales and stores say it must be: one row per (sale_month, store_idx)
-- with the store's current location and the exact sum of its sales.
WITH expected AS (
    SELECT s.sale_month, s.store_idx, st.location, sum(s.value) AS value
    FROM {sales} AS s
    JOIN {stores} AS st ON st.idx = s.store_idx
    GROUP BY s.sale_month, s.store_idx, st.location
)
SELECT count(*) FILTER (WHERE m.sale_month IS NULL) AS missing_rows,
       count(*) FILTER (WHERE e.sale_month IS NULL) AS extra_rows,
       count(*) FILTER (WHERE e.sale_month IS NOT NULL AND m.sale_month IS NOT NULL
                        AND e.location IS DISTINCT FROM m.location) AS wrong_location,
       count(*) FILTER (WHERE e.value <> m.value) AS wrong_value,
       min(coalesce(e.sale_month, m.sale_month)) FILTER (
           WHERE e.sale_month IS NULL OR m.sale_month IS NULL
              OR e.location IS DISTINCT FROM m.location OR e.value <> m.value
       ) AS first_month
FROM expected AS e
FULL JOIN {monthly_sales} AS m ON m.sale_month = e.sale_month AND m.store_idx = e.store_idx;
