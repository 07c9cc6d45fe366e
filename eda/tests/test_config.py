from __future__ import annotations

from pathlib import Path

import pytest

from eda.config import EdaSettings
from machine_learning_engineering.config import ConfigError, DatabaseSettings

VARIABLES = ["EDA_OUTPUT", "EDA_SAMPLE_SIZE", "EDA_CV_FOLDS", "EDA_WAIT_TIMEOUT", "MODEL_CLASS"]


def test_defaults_and_overrides() -> None:
    default = EdaSettings.from_env({})
    assert default.output == Path("eda/eda.pdf") and default.wait_timeout == 3600
    assert default.parameters() == {"sample_size": 100_000, "cv_folds": 5, "model_class": "customer"}
    assert default.model_class == "customer"
    assert default.database == DatabaseSettings.from_env("ds", {})  # the EDA reads as the read-only role
    custom = EdaSettings.from_env({"EDA_SAMPLE_SIZE": "5000", "EDA_CV_FOLDS": "3", "EDA_OUTPUT": "/srv/x.pdf"})
    assert custom.parameters() == {
        "sample_size": 5000,
        "cv_folds": 3,
        "model_class": "customer",
    } and custom.output == Path("/srv/x.pdf")


def test_every_variable_is_read() -> None:
    assert sorted(EdaSettings.variables().values()) == sorted(VARIABLES)
    values = ["/srv/eda.pdf", "200", "20", "1.5", "pkg.mod:Model"]
    s = EdaSettings.from_env({**dict(zip(VARIABLES, values, strict=True)), "DS_DB_PASSWORD": "pw", "DB_NAME": "x"})
    assert (s.output, s.sample_size, s.cv_folds, s.wait_timeout) == (Path("/srv/eda.pdf"), 200, 20, 1.5)
    assert s.model_class == "pkg.mod:Model"
    assert (s.database.name, s.database.password) == ("x", "pw") and "pw" not in repr(s)


def test_empty_values_mean_the_default() -> None:
    assert EdaSettings.from_env(dict.fromkeys(VARIABLES, "")) == EdaSettings.from_env({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EDA_CV_FOLDS": "1"}, "EDA_CV_FOLDS='1' must be greater than 1"),
        ({"EDA_CV_FOLDS": "21"}, "EDA_CV_FOLDS='21' must be less than 21"),
        ({"EDA_CV_FOLDS": "2.5"}, "EDA_CV_FOLDS='2.5' is not a whole number"),
        ({"EDA_SAMPLE_SIZE": "many"}, "EDA_SAMPLE_SIZE='many' is not a whole number"),
        ({"EDA_SAMPLE_SIZE": "0"}, "EDA_SAMPLE_SIZE='0' must be greater than 0"),
        ({"EDA_WAIT_TIMEOUT": "-1"}, "EDA_WAIT_TIMEOUT='-1' must be greater than 0"),
        ({"DB_PORT": "5432.5"}, "DB_PORT='5432.5' is not a TCP port number"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        EdaSettings.from_env(env)
    assert message in str(raised.value)
