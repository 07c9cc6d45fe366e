-- A breached threshold of a period, recorded once: a re-run of the period finds it there and
-- records nothing (the key is period_start, period_end, threshold). True when this call made it.
INSERT INTO monitoring_alerts (period_start, period_end, threshold, model_version, value, limit_value, payload)
VALUES (%(since)s, %(until)s, %(threshold)s, %(model_version)s, %(value)s, %(limit)s, %(payload)s)
ON CONFLICT (period_start, period_end, threshold) DO NOTHING
RETURNING true
