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


@pytest.fixture(scope="session")
def compiled_model(feature_frame: pd.DataFrame) -> CustomerModel:
    """Fitted like `fitted`, with its compiled scorer built and verified on a holdout."""
    train, holdout = feature_frame.iloc[:5000], feature_frame.iloc[5000:]
    model = CustomerModel(max_iter=60).fit(train)
    model.compile_scoring(holdout)
    assert model.engine_ is not None, model.scoring_
    return model
