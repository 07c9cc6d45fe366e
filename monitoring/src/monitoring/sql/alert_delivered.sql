-- The webhook took the alert: it is never sent again.
UPDATE monitoring_alerts
SET delivered_at = now(), last_error = NULL
WHERE period_start = %(since)s AND period_end = %(until)s AND threshold = %(threshold)s
