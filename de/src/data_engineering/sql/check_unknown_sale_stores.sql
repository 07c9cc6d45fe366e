-- Sales whose store_idx is not in stores: rows, distinct stores, and the first few store ids.
SELECT count(*) AS rows,
       count(DISTINCT s.store_idx) AS stores,
       (array_agg(DISTINCT s.store_idx ORDER BY s.store_idx))[1:5] AS examples
FROM {sales} AS s
WHERE NOT EXISTS (SELECT 1 FROM {stores} AS st WHERE st.idx = s.store_idx);
