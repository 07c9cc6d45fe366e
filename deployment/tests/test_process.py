from __future__ import annotations

import pytest

from testkit.localdb import free_port
from testkit.process import ServerError, gunicorn, status


def test_a_server_that_never_gets_ready_is_reported_with_its_log(companydata, tmp_path) -> None:
    port = free_port()
    env = companydata.env(MODEL_DIR=str(tmp_path / "no-models-here"), GUNICORN_WORKERS="1")
    with (
        pytest.raises(ServerError, match=r"(?s)did not become ready within 3 s.*no-models-here"),
        gunicorn(env, port, 3),
    ):
        pass
    assert status(f"http://127.0.0.1:{port}/health", timeout=1) == 0  # and it is gone


def test_a_ready_server_answers_and_is_stopped_afterwards(companydata, model_dir) -> None:
    port = free_port()
    with gunicorn(companydata.env(MODEL_DIR=str(model_dir), GUNICORN_WORKERS="1"), port) as url:
        assert status(url + "/ready") == 200
    assert status(url + "/health", timeout=1) == 0
