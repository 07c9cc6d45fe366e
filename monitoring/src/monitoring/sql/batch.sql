-- The batch scores of a period (`batch_predictions`, one partition per day): each client's score
-- with its features from feature_store (as JSON: every column but idx and label) and its label,
-- through monitoring.scored_features (the monitor cannot read feature_store or labels itself).
-- batch_predictions keeps no features: these are feature_store's as it is now, which is what the
-- day was scored on unless the ETL rebuilt feature_store since. A client no longer in
-- feature_store has NULL features (counted, left out of the comparison). in_distribution is the
-- scoring version's out-of-distribution verdict, recorded with the score (NULL: no gate).
-- Parameters: since, until (dates, inclusive).
SELECT b.client_idx,
       b.label AS prediction,
       b.probability,
       b.model_version,
       b.in_distribution,
       f.features,
       f.label
FROM batch_predictions AS b
LEFT JOIN monitoring.scored_features(%(since)s, %(until)s) AS f ON f.client_idx = b.client_idx
WHERE b.partition_date BETWEEN %(since)s AND %(until)s
ORDER BY b.partition_date, b.client_idx
