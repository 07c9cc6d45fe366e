-- A period's metrics, before they are written again (same transaction): a re-run replaces them.
DELETE FROM monitoring_metrics WHERE period_start = %(since)s AND period_end = %(until)s
