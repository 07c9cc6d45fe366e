"""The prediction log under gunicorn: acknowledged means recorded, through outages and restarts."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from urllib.parse import urlparse

from data_science.features import EXAMPLE_REQUEST
from testkit.fixtures import wait_until
from testkit.localdb import free_port
from testkit.process import gunicorn


def send(url: str, idx: range, statuses: list[int], done: list[int] | None = None, lock=None) -> None:
    """POST /predict once per idx over one keep-alive connection, recording each status."""
    host = urlparse(url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    try:
        for i in idx:
            connection.request(
                "POST", "/predict", json.dumps({**EXAMPLE_REQUEST, "idx": i}), {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            if done is not None:
                with lock:
                    done[0] += 1
    finally:
        connection.close()


def logged(db) -> tuple[int, int, int]:
    return db.query("SELECT count(*), count(DISTINCT prediction_id), count(DISTINCT client_idx) FROM predictions")[0]


def api_env(db, model_dir: Path, spool: Path) -> dict[str, str]:
    return db.env(
        MODEL_DIR=str(model_dir),
        GUNICORN_WORKERS="2",
        MODEL_POLL_SECONDS="60",
        PREDICTION_SPOOL_DIR=str(spool),
        PREDICTION_LOG_SHUTDOWN_SECONDS="1",
    )


def test_a_graceful_stop_during_an_outage_spools_and_the_restart_writes_every_prediction_once(
    companydata, model_dir, tmp_path
) -> None:
    spool = tmp_path / "spool"
    env = api_env(companydata, model_dir, spool)
    statuses: list[int] = []
    with gunicorn(env, free_port()) as url:
        send(url, range(0, 20), statuses)
        wait_until(lambda: logged(companydata)[0] == 20, 30, "the first 20 rows")
        companydata.cluster.stop()
        send(url, range(20, 320), statuses)  # acknowledged while the database is away
    # gunicorn stopped gracefully (SIGTERM): its workers spooled what they could not write.
    assert statuses == [200] * 320
    spooled = sum(len(path.read_text().splitlines()) for path in spool.glob("*.jsonl"))
    assert spooled == 300
    companydata.cluster.start(fast=True)
    with gunicorn(env, free_port()):
        wait_until(lambda: logged(companydata)[0] == 320, 60, "the spooled predictions to be replayed")
        wait_until(lambda: not list(spool.glob("*.jsonl")), 30, "the spool to be emptied")
    assert logged(companydata) == (320, 320, 320)


def test_10000_predictions_from_16_clients_while_the_database_restarts_twice(companydata, model_dir, tmp_path) -> None:
    env = api_env(companydata, model_dir, tmp_path / "spool")
    total, clients = 10_000, 16
    statuses: list[list[int]] = [[] for _ in range(clients)]
    done, lock = [0], threading.Lock()
    restarts: list[int] = []
    with gunicorn(env, free_port()) as url:
        share = total // clients
        threads = [
            threading.Thread(target=send, args=(url, range(c * share, (c + 1) * share), statuses[c], done, lock))
            for c in range(clients)
        ]
        for thread in threads:
            thread.start()
        for at in (total // 4, total // 2):  # restart when a quarter, then half, were answered
            wait_until(lambda at=at: done[0] >= at, 300, f"{at} answers")
            companydata.cluster.stop()
            restarts.append(done[0])
            companydata.cluster.start(fast=True)
        for thread in threads:
            thread.join()
        wait_until(lambda: logged(companydata)[0] >= total, 180, "every prediction to be written")
    answered = [s for per_client in statuses for s in per_client]
    assert len(answered) == total and set(answered) == {200}
    assert len(restarts) == 2 and restarts[-1] < total  # both restarts happened under load
    assert logged(companydata) == (total, total, total)
