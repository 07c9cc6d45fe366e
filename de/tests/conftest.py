from __future__ import annotations

from pathlib import Path

import pytest

from data_engineering.generate import GeneratorConfig
from testkit.fixtures import editable_copy, generated_dataset

SMALL = GeneratorConfig(customers=500, months=3, seed=7)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_dataset(tmp_path_factory, SMALL)


@pytest.fixture
def raw_dir(small_dataset: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the small generated dataset."""
    return editable_copy(small_dataset, tmp_path)
