-- Every attempt failed: release the claim, keep the error; the next run of the period tries again.
UPDATE monitoring_alerts
SET claimed_at = NULL, last_error = %(error)s
WHERE period_start = %(since)s AND period_end = %(until)s AND threshold = %(threshold)s
