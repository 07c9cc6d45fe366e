from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from data_engineering.generate import GeneratorConfig, generate

SMALL = GeneratorConfig(customers=500, months=3, seed=7)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "raw"
    generate(out, SMALL)
    return out


@pytest.fixture
def raw_dir(small_dataset: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the small generated dataset."""
    return Path(shutil.copytree(small_dataset, tmp_path / "raw"))
