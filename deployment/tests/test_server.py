"""The API as deployed: gunicorn with the package's configuration, real HTTP, real database."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from data_science.features import EXAMPLE_REQUEST
from testkit.fixtures import wait_until

EXAMPLE_SCRIPT = Path(__file__).resolve().parents[1] / "example_request.py"


def post(connection: http.client.HTTPConnection, idx: int) -> tuple[int, dict]:
    body = json.dumps({**EXAMPLE_REQUEST, "idx": idx})
    connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_example_request_prints_a_label_and_a_row_appears(server, companydata) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE_SCRIPT)], capture_output=True, text=True, env={"API_URL": server.url}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] in ("label: 0", "label: 1")
    deadline = time.monotonic() + 30
    while companydata.query("SELECT count(*) FROM prediction_log WHERE client_idx = 150000") != [(1,)]:
        assert time.monotonic() < deadline, "prediction not logged"
        time.sleep(0.1)


def test_new_version_is_picked_up_under_load_without_a_failed_request(server, companydata, trained, model_dir) -> None:
    host = urlparse(server.url)
    old = trained.version_
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        n = 0
        while not stop.is_set():
            n += 1
            status, answer = post(connection, worker * 1_000_000 + n)
            with lock:
                results.append((status, answer.get("model_version", "")))

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        new = trained.save(model_dir).name  # what the training job does, into the served directory
        deadline = time.monotonic() + 30
        while True:
            with lock:
                recent = [v for _, v in results[-50:]]
            if recent and all(v == new for v in recent):
                break
            assert time.monotonic() < deadline, "new version not picked up"
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    statuses = {s for s, _ in results}
    versions = [v for _, v in results]
    assert statuses == {200}, f"{len(results)} requests, statuses {statuses}"
    assert versions[0] == old and versions[-1] == new and set(versions) == {old, new}
    # Every answered request is logged exactly once (the workers flush as they go).
    deadline = time.monotonic() + 30
    while (logged := companydata.query("SELECT count(*) FROM prediction_log")[0][0]) < len(results):
        assert time.monotonic() < deadline, f"{logged} of {len(results)} logged"
        time.sleep(0.2)
    time.sleep(0.5)
    assert companydata.query("SELECT count(*), count(DISTINCT client_idx) FROM prediction_log") == [(len(results),) * 2]
    assert {v for (v,) in companydata.query("SELECT DISTINCT model_version FROM prediction_log")} == {old, new}


def metric_value(text: str, sample: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " "))


def test_metrics_add_up_over_the_gunicorn_workers(server, companydata) -> None:
    host = urlparse(server.url)
    connections = [http.client.HTTPConnection(host.hostname, host.port, timeout=10) for _ in range(4)]
    for n in range(40):
        assert post(connections[n % 4], n)[0] == 200
    for connection in connections:
        connection.close()

    def written_40() -> bool:
        nonlocal status, text
        status, body = server.get("/metrics")
        text = body.decode()
        return metric_value(text, "prediction_log_written_total") >= 40

    status, text = 0, ""
    wait_until(written_40, 30, "40 written records in /metrics")
    assert status == 200
    assert metric_value(text, 'api_requests_total{endpoint="/predict",status="200"}') == 40
    assert metric_value(text, "prediction_log_written_total") == 40
    assert metric_value(text, "prediction_log_dropped_total") == 0
    assert metric_value(text, "prediction_log_database_up") == 1
    assert 'api_model_info{version="' in text
