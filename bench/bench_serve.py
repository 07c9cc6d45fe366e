"""Serving benchmark: /predict and /predict/batch against a bare endpoint, one gunicorn, one run.

Setup: the generator's 150,000 clients are loaded into a throwaway cluster, a model is
trained on them and saved, and the API runs under its own gunicorn configuration (access log
off, as you would under load) with the prediction log writing to that cluster.
Load: wrk (Debian package `wrk`), --repeats runs of --seconds per endpoint at concurrency 1,
4 and 16, the median run reported (wrk and the server share this machine's cores).
  * baseline: GET /health, a Flask view that returns a constant JSON;
  * POST /predict with the challenge's example request;
  * POST /predict/batch with 1,000 records from feature_store.
Then 10,000 /predict requests with distinct idx must all answer 200 and leave exactly 10,000
new rows in `predictions`, one per idx.
Goals: /predict >= 50 % of the baseline's requests/s and p99 <= 20 ms at concurrency 4;
batch >= 100,000 rows/s; the 10,000-request check exact.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bench_etl import dataset

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import load_customers
from data_science.config import TrainSettings
from data_science.features import EXAMPLE_REQUEST
from data_science.train import read_training_data, train
from machine_learning_engineering.db import connect
from testkit import localdb
from testkit.process import gunicorn

CONCURRENCY = (1, 4, 16)
BATCH_ROWS = 1_000
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

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return Run(
        endpoint=urlparse(url).path.lstrip("/"),
        concurrency=concurrency,
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        errors=errors,
    )


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
        return query(cluster, sql, (CHECK_FIRST_IDX,))[0]

    deadline = time.monotonic() + 60
    while logged()[0] < CHECK_REQUESTS and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # anything written twice would arrive by now
    rows, distinct = logged()
    return answered, rows, distinct, seconds


def query(cluster: localdb.LocalCluster, sql: str, params: tuple) -> list[tuple]:
    conn = connect(cluster.settings("admin"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def batch_body(cluster: localdb.LocalCluster, path: Path) -> None:
    rows = query(
        cluster, "SELECT idx, attr_a, attr_b, scd_a, scd_b FROM feature_store ORDER BY idx LIMIT %s", (BATCH_ROWS,)
    )
    records = [
        {"idx": idx, "features": {"attr_a": a, "attr_b": b, "scd_a": sa, "scd_b": sb}} for idx, a, b, sa, sb in rows
    ]
    path.write_text(json.dumps(records))


def report(runs: list[Run], check: tuple[int, int, int, float], clients: int, version: str) -> str:
    by = {(r.endpoint, r.concurrency): r for r in runs}
    lines = [
        f"Serving benchmark: gunicorn {gunicorn_shape()}, model {version} trained on {clients:,} clients",
        "",
        "| endpoint | concurrency | requests/s | rows/s | p50 ms | p99 ms | % of baseline req/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        rows = r.requests_per_s * (BATCH_ROWS if r.endpoint == "predict/batch" else 1)
        share = r.requests_per_s / by[("health", r.concurrency)].requests_per_s
        lines.append(
            f"| {'/' + r.endpoint} | {r.concurrency} | {r.requests_per_s:,.0f} | {rows:,.0f} | {r.p50_ms:.2f} |"
            f" {r.p99_ms:.2f} | {share:.0%} | {r.errors} |"
        )
    single, batch = (
        by[("predict", 4)],
        max((r for r in runs if r.endpoint == "predict/batch"), key=lambda r: r.requests_per_s),
    )
    share = single.requests_per_s / by[("health", 4)].requests_per_s
    answered, rows, distinct, seconds = check
    batch_rows = batch.requests_per_s * BATCH_ROWS
    exact = answered == rows == distinct == CHECK_REQUESTS

    def met(ok: bool) -> str:
        return "yes" if ok else "no"

    lines += [
        "",
        "| goal | measured | met |",
        "|---|---:|:---:|",
        f"| /predict >= 50 % of the baseline's requests/s at concurrency 4 | {share:.0%} | {met(share >= 0.5)} |",
        f"| /predict p99 <= 20 ms at concurrency 4 | {single.p99_ms:.1f} ms | {met(single.p99_ms <= 20)} |",
        f"| /predict/batch >= 100,000 rows/s | {batch_rows:,.0f} rows/s (concurrency {batch.concurrency})"
        f" | {met(batch_rows >= 100_000)} |",
        f"| {CHECK_REQUESTS:,} requests: all 200, exactly {CHECK_REQUESTS:,} new rows, one per idx |"
        f" {answered:,} answered 200, {rows:,} rows, {distinct:,} idx ({seconds:.1f} s) | {met(exact)} |",
    ]
    return "\n".join(lines)


def gunicorn_shape() -> str:
    from deployment import gunicorn_conf

    return f"{gunicorn_conf.workers} workers x {gunicorn_conf.threads} threads ({gunicorn_conf.worker_class})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of one wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs per endpoint and concurrency (median kept)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if shutil.which("wrk") is None:
        raise SystemExit("bench-serve needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    raw = dataset(args.data_dir, args.customers)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        with localdb.temporary_cluster(fast=True) as cluster:
            with etl_transaction(cluster.settings("etl")) as cur:
                load_customers(cur, raw)
                build_features(cur)
            env = {"DB_HOSTNAME": "127.0.0.1", "DB_PORT": str(cluster.port)}
            frame = read_training_data(TrainSettings.from_env(env))
            model, _ = train(frame, test_size=0.2, seed=42)
            model.save(work / "models")
            batch_body(cluster, work / "batch.json")
            (work / "predict.json").write_text(json.dumps(EXAMPLE_REQUEST))
            scripts = {}
            for name in ("predict", "batch"):
                scripts[name] = work / f"{name}.lua"
                scripts[name].write_text(POST_SCRIPT.format(body=work / f"{name}.json"))
            inherited = {k: v for k, v in os.environ.items() if not k.endswith("_DB_PASSWORD")}  # cluster defaults
            server_env = {
                **inherited,
                **env,
                "MODEL_DIR": str(work / "models"),
                "GUNICORN_ACCESS_LOG": "",
                "GUNICORN_LOG_LEVEL": "warning",
            }
            with gunicorn(server_env, localdb.free_port()) as url:
                targets = [
                    (url + "/health", None),
                    (url + "/predict", scripts["predict"]),
                    (url + "/predict/batch", scripts["batch"]),
                ]
                runs = []
                for target, script in targets:
                    wrk(target, 4, 2, script)  # warm-up: every worker has loaded and used the model
                    for concurrency in CONCURRENCY:
                        # Keep-alive connections land on workers unevenly, run to run: report
                        # the median of a few runs rather than one lucky or unlucky draw.
                        repeats = [wrk(target, concurrency, args.seconds, script) for _ in range(args.repeats)]
                        runs.append(sorted(repeats, key=lambda r: r.requests_per_s)[len(repeats) // 2])
                        print(runs[-1])
                check = exact_count_check(url, cluster)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(runs, check, len(frame), model.version_)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
