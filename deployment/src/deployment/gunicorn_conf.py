"""gunicorn settings: `gunicorn -c python:deployment.gunicorn_conf "deployment.app:create_app()"`.

Each worker process loads the model itself (no preload: the model watcher and the prediction
logger are threads, which do not survive a fork) and runs a few threads, since a request
spends part of its time outside the GIL in NumPy. Numerical libraries get one thread per
worker: with several workers, OpenMP's default of one thread per core oversubscribes the CPU
and a one-row prediction pays for spinning up a pool.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:

    class Worker(Protocol):
        """What these hooks use of gunicorn's worker (gunicorn ships no type information)."""

        pid: int


os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every worker writes its metrics here and /metrics sums them (prometheus_client's
# multiprocess mode). Set before any worker imports prometheus_client; emptied at start.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="companydata-metrics-")
# The application's own loggers (model switches, prediction-log outages) beside gunicorn's.
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Longer than the prediction log's shutdown flush (PREDICTION_LOG_SHUTDOWN_SECONDS), so a
# worker always gets to spool what it could not write; Compose's stop_grace_period is longer still.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
raw_env = ["OMP_NUM_THREADS=1"]


def post_worker_init(worker: Worker) -> None:
    """Move the loaded app and model out of the garbage collector's sight.

    They live as long as the worker; scanning them again on every collection made a
    1,000-row batch a third slower (README, serving benchmark).
    """
    gc.collect()
    gc.freeze()


def on_starting(server: object) -> None:
    """Start from empty metrics: files of a previous run's workers would be summed in."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if directory.is_dir():
        for path in directory.glob("*.db"):
            path.unlink()
    else:
        directory.mkdir(parents=True)


def worker_exit(server: object, worker: Worker) -> None:
    """Write what the prediction log still buffers before the worker goes; spool the rest."""
    from machine_learning_engineering.prediction_log import PredictionLogger

    PredictionLogger.close_default()


def child_exit(server: object, worker: Worker) -> None:
    """A dead worker's live gauges (buffered records, database up) no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
