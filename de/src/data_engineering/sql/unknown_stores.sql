-- store_idx values of the staged month that stores.csv does not know.
SELECT DISTINCT s.store_idx
FROM sales_staging AS s
WHERE NOT EXISTS (SELECT 1 FROM {stores} AS st WHERE st.idx = s.store_idx)
ORDER BY s.store_idx
LIMIT 5;
