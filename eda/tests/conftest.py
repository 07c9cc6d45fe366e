from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data_engineering.generate import GeneratorConfig, generate


@pytest.fixture(scope="session")
def raw_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("eda") / "raw"
    generate(raw, GeneratorConfig(customers=5_000, months=6, seed=7))
    return raw


@pytest.fixture
def loaded(companydata, raw_data: Path):
    """companydata after the whole ETL of a small generated dataset."""
    subprocess.run(
        [sys.executable, "-m", "data_engineering", "etl"],
        env=companydata.env(RAW_DATA_DIR=str(raw_data)),
        check=True,
        capture_output=True,
    )
    return companydata
