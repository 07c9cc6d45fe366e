from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_engineering.generate import GeneratorConfig, generate
from data_science.model import CustomerModel


@pytest.fixture(scope="session")
def feature_frame(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """feature_store-shaped rows from the generator (no database needed for model tests)."""
    raw = tmp_path_factory.mktemp("gen") / "raw"
    generate(raw, GeneratorConfig(customers=6_000, months=1, seed=3))
    profiles = pd.read_csv(raw / "customer_profiles.csv")
    activity = pd.read_csv(raw / "customer_activity.csv")
    current = activity[activity["valid_to"].isna()][["idx", "scd_a", "scd_b"]]
    frame = profiles.merge(current, on="idx").merge(pd.read_csv(raw / "labels.csv"), on="idx")
    return frame[["idx", "attr_a", "attr_b", "scd_a", "scd_b", "label"]]


@pytest.fixture(scope="session")
def fitted(feature_frame: pd.DataFrame) -> CustomerModel:
    return CustomerModel(max_iter=60).fit(feature_frame)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"
