"""gunicorn settings: `gunicorn -c python:deployment.gunicorn_conf "deployment.app:create_app()"`.

Each worker process loads the model itself (no preload: the model watcher and the prediction
logger are threads, which do not survive a fork) and runs a few threads, since a request
spends part of its time outside the GIL in NumPy. Numerical libraries get one thread per
worker: with several workers, OpenMP's default of one thread per core oversubscribes the CPU
and a one-row prediction pays for spinning up a pool.
"""

import gc
import logging
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# The application's own loggers (model switches, prediction-log outages) beside gunicorn's.
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
raw_env = ["OMP_NUM_THREADS=1"]


def post_worker_init(worker):
    """Move the loaded app and model out of the garbage collector's sight.

    They live as long as the worker; scanning them again on every collection made a
    1,000-row batch a third slower (README, serving benchmark).
    """
    gc.collect()
    gc.freeze()


def worker_exit(server, worker):
    """Write what the prediction log still buffers before the worker goes."""
    from machine_learning_engineering.prediction_log import PredictionLogger

    PredictionLogger.close_default(timeout=10)
