-- One metric of a period (execute_values fills the VALUES list).
INSERT INTO monitoring_metrics (period_start, period_end, model_version, source, metric, feature, value)
VALUES %s
