"""Serving benchmark: /predict and /predict/batch against a bare endpoint, one gunicorn, logging on.

Setup: the generator's clients (150,000 by default) loaded into a throwaway cluster by the
real ETL, a model trained on them, saved and promoted, and the API under its own gunicorn
configuration (access log off, as you would under load) with the prediction log writing to
that cluster (a spool directory set, as in production, so that nothing is dropped while the
log catches up).
Load: wrk (Debian package `wrk`) at concurrency 1, 4 and 16, `--repeats` runs of `--seconds`
each per endpoint and concurrency; every figure is the median of the runs, with the smallest
and largest (wrk and the server share this machine's cores):
  * bare: GET /health, a Flask view that returns a constant JSON;
  * POST /predict with the challenge's example request;
  * POST /predict/batch with `--batch-rows` records from feature_store, the challenge's format;
  * POST /predict/batch with `--columns-rows` rows from feature_store as columns.
The log: every row answered must land in the log: `predictions`' rows plus the `rows` of each
`prediction_batches` row (a batch request is one row there; what the view `prediction_log`
counts, without expanding every batch); how long the writer needs to catch up after the runs
is reported.
Then 10,000 /predict requests with distinct idx must all answer 200 and leave exactly 10,000
new rows in `predictions`, one per idx.
Goals (issue 15): /predict >= 50 % of the bare endpoint's requests/s at concurrency 4 and p99
<= 10 ms there; /predict/batch >= 250,000 rows/s with records, >= 1,000,000 rows/s with
columns; the 10,000-request check exact.

    .venv/bin/python bench/bench_serve.py --seconds 3 --repeats 3   # about five minutes; writes bench/results/serve.md
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench_etl import dataset

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import load_customers
from data_science.config import TrainSettings
from data_science.features import EXAMPLE_REQUEST, SCHEMA
from data_science.model import CustomerModel
from data_science.train import read_training_data, train
from machine_learning_engineering import registry
from machine_learning_engineering.db import connect
from testkit import localdb
from testkit.process import gunicorn

CONCURRENCY = (1, 4, 16)
CHECK_REQUESTS = 10_000
CHECK_FIRST_IDX = 10_000_000  # above every generated client, so the check's rows are its own
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}

POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
"""


@dataclass
class Run:
    endpoint: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def wrk(url: str, concurrency: int, seconds: float, script: Path | None = None) -> Run:
    """One wrk run; errors are non-2xx answers plus socket errors."""
    cmd = ["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout

    def found(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise SystemExit(f"wrk's output has no {pattern!r}:\n{out}")
        return match

    def latency(percent: str) -> float:
        value, unit = found(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$").groups()
        return float(value) * UNITS[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return Run(
        endpoint=urlparse(url).path.lstrip("/"),
        concurrency=concurrency,
        requests_per_s=float(found(r"Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(found(r"(\d+) requests in").group(1)),
        errors=errors,
    )


def trained_model(cluster: localdb.LocalCluster, raw: Path, model_dir: Path) -> tuple[CustomerModel, str]:
    """The raw files through the real ETL into `cluster`, a model trained on feature_store,
    saved into `model_dir` and promoted: (model, version)."""
    with etl_transaction(cluster.settings("etl")) as cur:
        load_customers(cur, raw)
        build_features(cur)
    env = {"DB_HOSTNAME": "127.0.0.1", "DB_PORT": str(cluster.port)}
    frame = read_training_data(TrainSettings.from_env(env))
    model, _ = train(frame, test_size=0.2, seed=42)
    version = model.save(model_dir).name
    registry.promote(model_dir, version, "bench")
    return model, version


def query(cluster: localdb.LocalCluster, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = connect(cluster.settings("admin"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            return rows
    finally:
        conn.close()


def batch_rows(cluster: localdb.LocalCluster, n: int) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """The first `n` clients of feature_store as records and as columns."""
    names = SCHEMA.names
    rows = query(cluster, f"SELECT idx, {', '.join(names)} FROM feature_store ORDER BY idx LIMIT %s", (n,))
    records = [{"idx": row[0], "features": dict(zip(names, row[1:], strict=True))} for row in rows]
    columns = {"idx": [row[0] for row in rows], **{name: [row[1 + i] for row in rows] for i, name in enumerate(names)}}
    return records, columns


def exact_count_check(url: str, cluster: localdb.LocalCluster, threads: int = 8) -> tuple[int, int, int, float]:
    """(answered 200, rows logged, distinct idx logged, seconds) for CHECK_REQUESTS requests."""
    host, port = url.removeprefix("http://").split(":")
    per_thread = CHECK_REQUESTS // threads

    def client(worker: int) -> int:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        ok = 0
        for i in range(per_thread):
            idx = CHECK_FIRST_IDX + worker * per_thread + i
            body = json.dumps({**EXAMPLE_REQUEST, "idx": idx})
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            ok += response.status == 200
        connection.close()
        return ok

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        answered = sum(pool.map(client, range(threads)))
    seconds = time.perf_counter() - started

    def logged() -> tuple[int, int]:
        sql = "SELECT count(*), count(DISTINCT client_idx) FROM predictions WHERE client_idx >= %s"
        count, distinct = query(cluster, sql, (CHECK_FIRST_IDX,))[0]
        return int(count), int(distinct)

    deadline = time.monotonic() + 60
    while logged()[0] < CHECK_REQUESTS and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # anything written twice would arrive by now
    rows, distinct = logged()
    return answered, rows, distinct, seconds


def counters(url: str) -> dict[str, float]:
    """Rows scored (`api_predictions_total`) and the prediction log's counters from /metrics,
    summed over the workers."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    names = {"scored": "api_predictions_total"}
    names |= {
        name: f"prediction_log_{name}_total" for name in ("written", "spooled", "replayed", "dropped", "dead_lettered")
    }
    for key, metric in names.items():
        match = re.search(rf"^{metric} (\S+)$", text, re.M)
        out[key] = float(match.group(1)) if match else 0.0
    return out


def logged_rows_sql(cluster: localdb.LocalCluster) -> str:
    """How many predictions the log holds: `predictions`' rows plus every `prediction_batches`
    row's `rows` (its CHECKs hold each array to that length) where the schema has that table.
    Counting through the view `prediction_log` gives the same number but expands every batch's
    features (a minute and more for millions of rows), which would be timed as the log's lag."""
    found = query(cluster, "SELECT to_regclass('public.prediction_batches') IS NOT NULL")[0][0]
    batches = " + (SELECT coalesce(sum(rows), 0) FROM prediction_batches)" if found else ""
    return f"SELECT (SELECT count(*) FROM predictions){batches}"


def drain(url: str, cluster: localdb.LocalCluster, timeout: float = 600) -> tuple[float, int, float]:
    """Wait until the server is idle (the requests wrk left in flight answered: the rows scored
    stop moving) and the log (`logged_rows_sql`) holds every row it scored, or `timeout`: (rows
    scored, rows logged, seconds waited). Polling, not a test: a benchmark may wait."""
    started = time.monotonic()
    scored, rows = counters(url)["scored"], -1
    count_sql = logged_rows_sql(cluster)
    while time.monotonic() - started < timeout:
        time.sleep(2)
        now = counters(url)["scored"]
        rows = int(query(cluster, count_sql)[0][0])
        if now == scored and rows >= now:
            break
        scored = now
    return scored, rows, time.monotonic() - started


def spread(values: list[float], digits: int = 0) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


TARGETS = {
    "bare": "GET /health",
    "predict": "POST /predict",
    "records": "POST /predict/batch, records",
    "columns": "POST /predict/batch, columns",
}


def report(
    runs: dict[tuple[str, int], list[Run]],
    rows_per_request: dict[str, int],
    check: tuple[int, int, int, float],
    log: dict[str, Any],
    header: str,
) -> str:
    lines = [
        header,
        "",
        "| endpoint | concurrency | requests/s | rows/s | p50 ms | p99 ms | % of bare req/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, concurrency), found in runs.items():
        bare = statistics.median(r.requests_per_s for r in runs[("bare", concurrency)])
        rates = [r.requests_per_s for r in found]
        rows = [rate * rows_per_request[name] for rate in rates]
        lines.append(
            f"| {TARGETS[name]} | {concurrency} | {spread(rates)} | {spread(rows)} | "
            f"{spread([r.p50_ms for r in found], 2)} | {spread([r.p99_ms for r in found], 2)} | "
            f"{statistics.median(rates) / bare:.0%} | {sum(r.errors for r in found)} |"
        )

    def best(name: str) -> tuple[int, list[float]]:
        concurrency = max(CONCURRENCY, key=lambda c: statistics.median(r.requests_per_s for r in runs[(name, c)]))
        return concurrency, [r.requests_per_s * rows_per_request[name] for r in runs[(name, concurrency)]]

    shares = [p.requests_per_s / b.requests_per_s for p, b in zip(runs[("predict", 4)], runs[("bare", 4)], strict=True)]
    p99 = [r.p99_ms for r in runs[("predict", 4)]]
    records_c, records = best("records")
    columns_c, columns = best("columns")
    answered, rows, distinct, seconds = check
    exact = answered == rows == distinct == CHECK_REQUESTS

    complete = log["logged"] == log["scored"]

    def met(ok: bool) -> str:
        return "yes" if ok else "no"

    lines += [
        "",
        "| goal | measured: median (smallest-largest) | met |",
        "|---|---:|:---:|",
        f"| /predict >= 50 % of the bare endpoint's requests/s at concurrency 4 | "
        f"{statistics.median(shares):.0%} ({min(shares):.0%}-{max(shares):.0%}) | "
        f"{met(statistics.median(shares) >= 0.5)} |",
        f"| /predict p99 <= 10 ms at concurrency 4 | {spread(p99, 1)} ms | {met(statistics.median(p99) <= 10)} |",
        f"| /predict/batch, records, >= 250,000 rows/s | {spread(records)} rows/s (concurrency {records_c}) | "
        f"{met(statistics.median(records) >= 250_000)} |",
        f"| /predict/batch, columns, >= 1,000,000 rows/s | {spread(columns)} rows/s (concurrency {columns_c}) | "
        f"{met(statistics.median(columns) >= 1_000_000)} |",
        f"| {CHECK_REQUESTS:,} requests: all 200, exactly {CHECK_REQUESTS:,} new rows, one per idx | "
        f"{answered:,} answered 200, {rows:,} rows, {distinct:,} idx ({seconds:.1f} s) | {met(exact)} |",
        "",
        f"The log: the server scored {log['scored']:,.0f} rows during the runs; {log['logged']:,} were in "
        f"the log {log['drain']:.0f} s after the last run "
        f"({'exactly as many' if complete else 'NOT as many'}; "
        f"spooled {log['spooled']:,.0f} and replayed {log['replayed']:,.0f} on the way, dropped {log['dropped']:,.0f}, "
        f"dead letters {log['dead_lettered']:,.0f}). The batch runs scored {log['batch_rows']:,.0f} rows in "
        f"{log['batch_seconds']:.0f} s and the log had them all {log['seconds']:.0f} s after they started: "
        f"{log['batch_rows'] / max(log['seconds'], 1e-9):,.0f} rows/s recorded, sustained.",
    ]
    return "\n".join(lines)


def gunicorn_shape() -> str:
    from deployment import gunicorn_conf

    return f"{gunicorn_conf.workers} workers x {gunicorn_conf.threads} threads ({gunicorn_conf.worker_class})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of one wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs per endpoint and concurrency")
    parser.add_argument("--batch-rows", type=int, default=1_000, help="records per /predict/batch request")
    parser.add_argument("--columns-rows", type=int, default=10_000, help="rows per columnar /predict/batch request")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if shutil.which("wrk") is None:
        raise SystemExit("bench-serve needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    raw = dataset(args.data_dir, args.customers)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        with localdb.temporary_cluster(fast=True) as cluster:
            _, version = trained_model(cluster, raw, work / "models")
            records, columns = batch_rows(cluster, max(args.batch_rows, args.columns_rows))
            bodies = {
                "predict": EXAMPLE_REQUEST,
                "records": records[: args.batch_rows],
                "columns": {name: values[: args.columns_rows] for name, values in columns.items()},
            }
            scripts: dict[str, Path | None] = {"bare": None}
            for name, body in bodies.items():
                (work / f"{name}.json").write_text(json.dumps(body))
                scripts[name] = work / f"{name}.lua"
                scripts[name].write_text(POST_SCRIPT.format(body=work / f"{name}.json"))  # type: ignore[union-attr]
            rows_per_request = {"bare": 1, "predict": 1, "records": args.batch_rows, "columns": args.columns_rows}
            paths = {"bare": "/health", "predict": "/predict", "records": "/predict/batch", "columns": "/predict/batch"}
            inherited = {k: v for k, v in os.environ.items() if not k.endswith("_DB_PASSWORD")}  # cluster defaults
            server_env = {
                **inherited,
                "DB_HOSTNAME": "127.0.0.1",
                "DB_PORT": str(cluster.port),
                "MODEL_DIR": str(work / "models"),
                "PREDICTION_SPOOL_DIR": str(work / "spool"),
                "MAX_BATCH_SIZE": str(args.batch_rows),
                "MAX_COLUMNAR_ROWS": str(args.columns_rows),
                "MAX_BODY_BYTES": str(64 << 20),
                "GUNICORN_ACCESS_LOG": "",
                "GUNICORN_LOG_LEVEL": "warning",
            }
            runs: dict[tuple[str, int], list[Run]] = {}
            with gunicorn(server_env, localdb.free_port()) as url:
                with urllib.request.urlopen(url + "/model", timeout=10) as response:
                    scoring = json.load(response)["serving"].get("scoring", {})
                for name, script in scripts.items():
                    if name == "records":  # the batch phase: how far the writer falls behind
                        batch_started, scored_before = time.monotonic(), counters(url)["scored"]
                    wrk(url + paths[name], 4, 2, script)  # warm-up: every worker has loaded and used the model
                    for concurrency in CONCURRENCY:
                        found = [wrk(url + paths[name], concurrency, args.seconds, script) for _ in range(args.repeats)]
                        runs[(name, concurrency)] = found
                        rates = [f"{r.requests_per_s:,.0f}" for r in found]
                        print(f"{name} c={concurrency}: {rates} req/s, errors {sum(r.errors for r in found)}")
                batch_seconds = time.monotonic() - batch_started
                scored, logged, waited = drain(url, cluster)
                log = {
                    **counters(url),
                    "logged": logged,
                    "drain": waited,
                    "batch_rows": scored - scored_before,
                    "batch_seconds": batch_seconds,
                    "seconds": time.monotonic() - batch_started,
                }
                print(log)
                check = exact_count_check(url, cluster)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = (
        f"Serving benchmark: gunicorn {gunicorn_shape()}, model {version} trained on {args.customers:,} clients, "
        f"scored by {scoring.get('engine', scoring)}; prediction logging on (PostgreSQL on the same machine); "
        f"wrk, {args.repeats} runs of {args.seconds:g} s per figure: median (smallest-largest). "
        f"Batches: {args.batch_rows:,} records or {args.columns_rows:,} rows in columns per request."
    )
    text = report(runs, rows_per_request, check, log, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
