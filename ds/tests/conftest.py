from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_science.model import CustomerModel


@pytest.fixture(scope="session")
def fitted(feature_frame: pd.DataFrame) -> CustomerModel:
    return CustomerModel(max_iter=60).fit(feature_frame)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"
