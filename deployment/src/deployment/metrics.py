"""The API's Prometheus metrics and the `/metrics` exposition.

gunicorn runs several worker processes; `deployment.gunicorn_conf` points
`PROMETHEUS_MULTIPROC_DIR` at a fresh directory before any worker imports prometheus_client,
so each worker writes its values there and whichever worker answers `/metrics` reports the
sum over all of them. Without that variable (tests, a plain Flask run) the metrics are the
process's own.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# The exposition's Content-Type, for the /metrics view.
CONTENT_TYPE: str = CONTENT_TYPE_LATEST

REQUESTS = Counter("api_requests", "HTTP requests answered, by route and status.", ["endpoint", "status"])
LATENCY = Histogram(
    "api_request_duration_seconds",
    "Time from the request reaching Flask to the response leaving it, by route.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SCORED = Counter("api_predictions", "Rows scored (one per /predict, n per /predict/batch).")
OOD = Counter(
    "api_ood_rows",
    "Rows the out-of-distribution gate judged: verdict in, out, or none (the version has no gate).",
    ["verdict"],
)
OOD_REFUSED = Counter(
    "api_ood_refused_requests", "Requests refused because a row was out of distribution (OOD_POLICY=reject)."
)
MODEL = Gauge("api_model_info", "1 for the model version served, 0 for versions served before.", ["version"],
              multiprocess_mode="livemax")  # fmt: skip


@lru_cache(maxsize=512)
def _child(metric: Any, *labels: str) -> Any:
    """A labelled series, looked up once: `labels()` takes a lock and builds a key every time."""
    return metric.labels(*labels)


@lru_cache(maxsize=512)
def _answer_series(endpoint: str, status: int) -> tuple[Any, Any]:
    """The request counter's and the latency histogram's series of one route and status, found once."""
    return REQUESTS.labels(endpoint, str(status)), LATENCY.labels(endpoint)


def answered(endpoint: str, status: int, seconds: float) -> None:
    """One request answered: counted by route and status, its duration observed by route."""
    requests, latency = _answer_series(endpoint, status)
    requests.inc()
    latency.observe(seconds)


def judged(verdict: str, rows: int) -> None:
    """`rows` rows the out-of-distribution gate judged `verdict` (in, out, none)."""
    _child(OOD, verdict).inc(rows)


def exposition() -> bytes:
    """Every metric in Prometheus' text format, summed over the gunicorn workers when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def serving(version: str, previous: str | None) -> None:
    if previous is not None:
        MODEL.labels(previous).set(0)
    MODEL.labels(version).set(1)
