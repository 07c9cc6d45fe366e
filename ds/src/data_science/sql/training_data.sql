SELECT idx, attr_a, attr_b, scd_a, scd_b, label
FROM feature_store
ORDER BY idx;
