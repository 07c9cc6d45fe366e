from __future__ import annotations

from pathlib import Path

import pytest

from data_engineering.generate import GeneratorConfig
from orchestration.resources import EtlResource, MonitoringResource, ScoringResource, TrainingResource
from testkit.fixtures import TestDatabase, editable_copy, generated_dataset

# Enough clients for a model with a holdout of both classes; three months of sales.
SMALL = GeneratorConfig(customers=1_500, months=3, seed=13)
MONTHS = ("2020-01-01", "2020-02-01", "2020-03-01")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_dataset(tmp_path_factory, SMALL)


@pytest.fixture
def raw_dir(small_dataset: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the small generated dataset."""
    return editable_copy(small_dataset, tmp_path)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def stack(companydata: TestDatabase, raw_dir: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> TestDatabase:
    """The environment the resources read (as in Compose), pointed at the test database."""
    for name in list(__import__("os").environ):
        if name.endswith("_DB_PASSWORD") or name.startswith(("ETL_", "TRAIN_", "MONITOR_", "ALERT_")):
            monkeypatch.delenv(name)
    for name, value in companydata.env().items():
        if name.startswith("DB_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAW_DATA_DIR", str(raw_dir))
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("ETL_LOCK_WAIT", "10")
    return companydata


@pytest.fixture
def resources(stack: TestDatabase, raw_dir: Path, model_dir: Path, tmp_path: Path) -> dict[str, object]:
    return {
        "etl": EtlResource(raw_data_dir=str(raw_dir)),
        "training": TrainingResource(model_dir=str(model_dir)),
        "scoring": ScoringResource(model_dir=str(model_dir)),
        "monitoring": MonitoringResource(
            model_dir=str(model_dir),
            reports_dir=str(tmp_path / "reports" / "html"),
            workspace=str(tmp_path / "reports" / "workspace"),
        ),
    }
