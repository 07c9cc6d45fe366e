-- Take an undelivered alert for delivery: only one run at a time holds it (a claim older than
-- the lease, left by a run that died, may be taken over). Returns the payload to send.
UPDATE monitoring_alerts
SET claimed_at = now(), attempts = attempts + 1
WHERE period_start = %(since)s AND period_end = %(until)s AND threshold = %(threshold)s
  AND delivered_at IS NULL
  AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => %(lease)s))
RETURNING payload
