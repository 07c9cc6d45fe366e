-- The API's predictions of a period (the prediction log, through the view `prediction_log`: single
-- requests and logged batches alike, one row per prediction): each with the features
-- it was asked about (the validated request, as JSON), the out-of-distribution gate's verdict
-- (NULL: the serving version had no gate) and, when `labels` has one, the client's true label
-- (through monitoring.request_labels: the monitor cannot read `labels` itself).
-- Parameters: start, end (timestamptz; end excluded).
SELECT p.client_idx,
       p.label AS prediction,
       p.probability,
       p.model_version,
       p.in_distribution,
       p.features,
       l.label
FROM prediction_log AS p
LEFT JOIN monitoring.request_labels(%(start)s, %(end)s) AS l ON l.client_idx = p.client_idx
WHERE p.predicted_at >= %(start)s AND p.predicted_at < %(end)s
ORDER BY p.predicted_at, p.prediction_id, p.batch_id, p.batch_row
