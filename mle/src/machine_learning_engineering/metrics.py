"""Prometheus metrics of the prediction log, shared by every process that logs predictions.

Under gunicorn each worker is a process: with `PROMETHEUS_MULTIPROC_DIR` set before this
module is imported, prometheus_client keeps the values in files there and `/metrics` sums
them over the live workers (gauges say how: `livesum`, `livemin`). Without it (tests, scripts)
they are ordinary in-process metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WRITTEN = Counter("prediction_log_written", "Prediction records written to the predictions table.")
SPOOLED = Counter(
    "prediction_log_spooled", "Records written to the local spool (database away at shutdown or overflow)."
)
REPLAYED = Counter("prediction_log_replayed", "Records read back from the spool and written to the database.")
DEAD_LETTERED = Counter(
    "prediction_log_dead_lettered", "Records the database refused, kept in prediction_dead_letters with the error."
)
DROPPED = Counter("prediction_log_dropped", "Records lost: neither written, spooled nor dead-lettered.")
WRITE_FAILURES = Counter("prediction_log_write_failures", "Write attempts that failed for the database's sake.")
BUFFERED = Gauge("prediction_log_buffered", "Records in memory, not yet written.", multiprocess_mode="livesum")
DATABASE_UP = Gauge(
    "prediction_log_database_up", "1 while every worker can write the log, else 0.", multiprocess_mode="livemin"
)
