"""The test infrastructure itself: it must be able to fail, and its database must be the stack's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from testkit import localdb
from testkit.fixtures import wait_until
from testkit.toy_model import PlanModel, training_frame


def test_wait_until_returns_on_the_event_and_fails_naming_it() -> None:
    happened = threading.Event()
    threading.Timer(0.05, happened.set).start()
    wait_until(happened.is_set, timeout=10, what="the timer")
    with pytest.raises(AssertionError, match=r"timed out after 0\.1 s waiting for nothing at all"):
        wait_until(lambda: False, timeout=0.1, what="nothing at all")


def test_the_bootstrap_is_the_package_data_compose_mounts() -> None:
    names = sorted(p.name for p in localdb.INIT_DIR.iterdir() if p.name != "__pycache__")
    assert names[:4] == ["10-roles.sh", "20-privileges.sql", "30-predictions.sql", "40-api-keys.sql"]
    assert all(name.endswith((".sh", ".sql")) for name in names), names
    compose = (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()
    assert "./mle/src/machine_learning_engineering/bootstrap:/docker-entrypoint-initdb.d:ro" in compose
    assert "machine_learning_engineering" in str(localdb.INIT_DIR)


def test_the_cluster_has_every_role_of_the_stack(companydata) -> None:
    roles = {r for (r,) in companydata.query("SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%'")}
    assert {"admin", "etl_user", "ds_user", "mle_user", "api_admin"} <= roles


def test_the_toy_model_learns_its_plans() -> None:
    model = PlanModel().fit(training_frame())
    labels, probabilities = model.predict_labels_and_probabilities(training_frame().head(1))
    assert model.known_categories() == {"plan": ["basic", "gold"]}
    assert labels.tolist() == [1] and probabilities[0] == pytest.approx(0.8)
