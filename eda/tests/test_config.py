from __future__ import annotations

from pathlib import Path

import pytest

from eda.config import EdaSettings
from machine_learning_engineering.config import ConfigError


def test_defaults_and_overrides() -> None:
    default = EdaSettings.from_env({})
    assert default.output == Path("eda/eda.pdf") and default.wait_timeout == 3600
    assert default.parameters() == {"sample_size": 100_000, "cv_folds": 5}
    assert default.database.user == "ds_user"  # the EDA reads as the read-only role
    custom = EdaSettings.from_env({"EDA_SAMPLE_SIZE": "5000", "EDA_CV_FOLDS": "3", "EDA_OUTPUT": "/srv/x.pdf"})
    assert custom.parameters() == {"sample_size": 5000, "cv_folds": 3} and custom.output == Path("/srv/x.pdf")


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="EDA_CV_FOLDS='1' must be between 1 and 21"):
        EdaSettings.from_env({"EDA_CV_FOLDS": "1"})
    with pytest.raises(ConfigError, match="EDA_SAMPLE_SIZE='many' is not a number"):
        EdaSettings.from_env({"EDA_SAMPLE_SIZE": "many"})
