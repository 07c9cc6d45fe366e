"""Where a request's time goes: /predict and /predict/batch taken apart, in-process.

Setup: as `make bench-serve` (the generator's clients loaded by the real ETL into a throwaway
cluster, a model trained and saved), then the production `create_app` with a real
`PredictionLogger` writing to that cluster, driven in one thread by Flask's test client (no
sockets: what HTTP and gunicorn add is in bench-serve's bare-endpoint figures). The garbage
collector's view of the loaded app is frozen, as gunicorn's workers do.

Each stage is timed where it runs, in CPU time of the thread that runs it (`time.thread_time`:
what other processes on a shared machine take is not counted), by wrapping the function that does it: JSON parsing
(`deployment.jsontext.loads`), validation (`read_single`: the request model for /predict;
`read_batch` for /predict/batch), features (`FeatureSchema.columns`, `to_columns`), the OOD
gate (`check_distribution`), the model (`score_columns`), the log record
(`PredictionRecord.from_columns`, or `BatchRecord.from_columns` where a batch is logged as
one row) and handing it to the writer (`PredictionLogger.log`), the
answer (`answer_single`, `answer_records`, `answer_columns`: its JSON and the Response).
"Flask and the rest" is the WSGI call's time minus those. The writer thread
(off the request path, on the same CPU) is timed too: building COPY text, the round trip, and
the PostgreSQL backend's CPU time per row (from /proc). A run is `--requests` requests (the
batches: fewer); each figure is the median of `--runs` runs, with the smallest and largest.

    .venv/bin/python bench/bench_breakdown.py      # about two minutes; writes bench/results/breakdown.md
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_etl import dataset
from bench_serve import batch_rows, trained_model

from data_science.features import EXAMPLE_REQUEST
from data_science.model import CustomerModel
from deployment import jsontext
from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder
from deployment.routes import predict as predict_route
from machine_learning_engineering import prediction_log
from machine_learning_engineering.prediction_log import PredictionLogger
from machine_learning_engineering.schema import FeatureSchema
from testkit import localdb

STAGES = [
    ("json", "JSON parsing"),
    ("validation", "validation (request model / column checks)"),
    ("features", "features (validated values to Columns)"),
    ("ood", "OOD gate (check_distribution)"),
    ("model", "model (score_columns)"),
    ("record", "log record (PredictionRecord / BatchRecord.from_columns)"),
    ("enqueue", "handing it to the writer (PredictionLogger.log)"),
    ("answer", "answer (JSON)"),
]
TICK = os.sysconf("SC_CLK_TCK")


class Clock:
    """CPU seconds spent per stage, by wrapping the functions that do the stages."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        original = owner.__dict__[attribute] if isinstance(owner, type) else getattr(owner, attribute)
        function = original.__func__ if isinstance(original, classmethod | staticmethod) else original

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent[stage] += time.thread_time() - started
                self.calls[stage] += 1

        replacement: Any = classmethod(timed) if isinstance(original, classmethod) else timed
        setattr(owner, attribute, replacement)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def reset(self) -> None:
        self.spent.clear()
        self.calls.clear()

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@contextmanager
def instrumented(app: Any, model: CustomerModel, logger: PredictionLogger) -> Iterator[Clock]:
    clock = Clock()
    clock.wrap(jsontext, "loads", "json")
    clock.wrap(predict_route, "read_batch", "validation")
    clock.wrap(predict_route, "read_single", "validation")
    clock.wrap(FeatureSchema, "columns", "features")
    clock.wrap(predict_route, "to_columns", "features")
    clock.wrap(model, "check_distribution", "ood")
    clock.wrap(model, "score_columns", "model")
    # One-row requests are `PredictionRecord`s; a batch is one `BatchRecord` where the log has them.
    for kind in ("PredictionRecord", "BatchRecord"):
        if hasattr(prediction_log, kind):
            clock.wrap(getattr(prediction_log, kind), "from_columns", "record")
    clock.wrap(logger, "log", "enqueue")
    for answer in ("answer_single", "answer_records", "answer_columns"):
        clock.wrap(predict_route, answer, "answer")
    clock.wrap(app, "wsgi_app", "wsgi")
    clock.wrap(logger, "_write_splitting", "write")
    for writer in ("copy_text", "batch_copy_binary"):  # the COPY data of each kind of record
        if hasattr(prediction_log, writer):
            clock.wrap(prediction_log, writer, "copy_text")
    try:
        yield clock
    finally:
        clock.restore()


def measure(
    client: Any, clock: Clock, logger: PredictionLogger, path: str, body: bytes, requests: int, rows: int
) -> dict[str, float]:
    """One run: µs per row of each stage (per request for one-row requests)."""
    logger.flush()
    clock.reset()
    pid = logger._conn.get_backend_pid()
    cpu = backend_cpu(pid)
    for _ in range(requests):
        response = client.post(path, data=body, content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
    assert logger.flush(timeout=120)
    database = backend_cpu(pid) - cpu
    n = requests * rows
    out = {stage: clock.spent[stage] / n * 1e6 for stage, _ in STAGES}
    out["wsgi"] = clock.spent["wsgi"] / n * 1e6
    out["rest"] = out["wsgi"] - sum(out[stage] for stage, _ in STAGES)
    out["copy_text"] = clock.spent["copy_text"] / n * 1e6
    out["write"] = clock.spent["write"] / n * 1e6  # COPY text + the round trip, off the request path
    out["database"] = database / n * 1e6
    return out


def bare(client: Any, clock: Clock, requests: int) -> float:
    clock.reset()
    for _ in range(requests):
        client.get("/health")
    return clock.spent["wsgi"] / requests * 1e6


def cell(values: list[float]) -> str:
    median = statistics.median(values)
    digits = 2 if median < 10 else 1 if median < 100 else 0
    return f"{median:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="/predict requests per run")
    parser.add_argument("--batch-rows", type=int, default=1000, help="records per /predict/batch request")
    parser.add_argument("--columns-rows", type=int, default=10_000, help="rows per columnar /predict/batch request")
    parser.add_argument("--out", type=Path, default=Path("bench/results/breakdown.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raw = dataset(args.data_dir, args.customers)
    work = Path(tempfile.mkdtemp(prefix="bench-breakdown-"))
    try:
        with localdb.temporary_cluster(fast=True) as cluster:
            _, version = trained_model(cluster, raw, work / "models")
            records, columns = batch_rows(cluster, max(args.batch_rows, args.columns_rows))
            logger = PredictionLogger(cluster.settings("mle"))
            settings = ServeSettings(
                model_dir=work / "models",
                model_poll_seconds=600.0,
                max_batch=args.batch_rows,
                max_columns=args.columns_rows,
                max_body_bytes=1 << 26,
            )
            holder = ModelHolder(CustomerModel, work / "models", 600.0, logger)
            holder.refresh()
            served = holder.model
            assert served is not None
            app = create_app(settings, holder)
            client = app.test_client()
            bodies = {  # name: (path, body, rows per request, requests per run)
                "/predict": ("/predict", json.dumps(EXAMPLE_REQUEST).encode(), 1, args.requests),
                "records": (
                    "/predict/batch",
                    json.dumps(records[: args.batch_rows]).encode(),
                    args.batch_rows,
                    max(5, args.requests // 50),
                ),
                "columns": (
                    "/predict/batch",
                    json.dumps({name: values[: args.columns_rows] for name, values in columns.items()}).encode(),
                    args.columns_rows,
                    max(3, args.requests // 200),
                ),
            }
            for path, body, _, _ in bodies.values():  # warm-up
                client.post(path, data=body, content_type="application/json")
            gc.collect()
            gc.freeze()  # as gunicorn's workers do after loading the app
            results: dict[str, list[dict[str, float]]] = {name: [] for name in bodies}
            health: list[float] = []
            with instrumented(app, served, logger) as clock:
                for _ in range(args.runs):
                    for name, (path, body, rows, requests) in bodies.items():
                        results[name].append(measure(client, clock, logger, path, body, requests, rows))
                    health.append(bare(client, clock, args.requests))
            logger.close()
            scoring = served.scoring()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, results, health, version, scoring)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


def report(
    args: argparse.Namespace,
    results: dict[str, list[dict[str, float]]],
    health: list[float],
    version: str,
    scoring: dict[str, Any],
) -> str:
    def row(label: str, key: str) -> str:
        return f"| {label} | " + " | ".join(cell([r[key] for r in results[name]]) for name in results) + " |"

    lines = [
        f"Request breakdown, in-process (Flask test client, one thread): model {version} trained on "
        f"{args.customers:,} clients, scored by {scoring.get('engine', scoring)}; median (smallest-largest) of "
        f"{args.runs} runs, µs per row (/predict: per request).",
        "",
        f"| stage | /predict | /predict/batch, {args.batch_rows:,} records | /predict/batch, columns of "
        f"{args.columns_rows:,} rows |",
        "|---|---:|---:|---:|",
        row("**the request, in the app (WSGI call)**", "wsgi"),
        *(row(label, key) for key, label in STAGES),
        row("Flask, flask-openapi3, hooks, metrics and the rest", "rest"),
        row("writer thread: COPY data (text or binary)", "copy_text"),
        row("writer thread: COPY text and the round trip", "write"),
        row("PostgreSQL backend CPU", "database"),
        "",
        f"Bare endpoint (GET /health) in the app: {cell(health)} µs per request.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
