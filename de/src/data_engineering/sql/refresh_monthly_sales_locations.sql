-- After stores is replaced: monthly_sales carries each store's location, so a renamed store is
-- renamed in every month already loaded too (in place, row locks only), not only in months
-- loaded from now on. Reads the stores table the caller names (its staged one).
UPDATE monthly_sales AS m
SET location = st.location
FROM {stores} AS st
WHERE st.idx = m.store_idx
  AND m.location IS DISTINCT FROM st.location;
