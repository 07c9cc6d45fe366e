from __future__ import annotations

from pathlib import Path

import pytest

from data_science.config import HYPERPARAMETERS, TrainSettings
from machine_learning_engineering.config import ConfigError, DatabaseSettings

VARIABLES = [
    "MODEL_DIR",
    "TRAIN_WAIT_TIMEOUT",
    "TRAIN_TEST_SIZE",
    "TRAIN_SEED",
    "TRAIN_TIME_LIMIT",
    "TRAIN_PROMOTE",
    "TRAIN_PROMOTION_TOLERANCE",
]


def test_defaults() -> None:
    s = TrainSettings.from_env({})
    assert (s.model_dir, s.wait_timeout, s.test_size, s.seed) == (Path("models"), 3600.0, 0.2, 42)
    assert (s.time_limit, s.promote, s.tolerance) == (None, True, 0.005)
    assert (s.params, s.warm_start_from, s.strict) == ({}, None, False)
    assert s.database == DatabaseSettings.from_env("ds", {})  # the read-only role
    assert HYPERPARAMETERS == ("learning_rate", "max_iter", "max_leaf_nodes")


def test_every_variable_is_read() -> None:
    assert sorted(TrainSettings.variables().values()) == sorted(VARIABLES)
    env = dict(zip(VARIABLES, ["/srv/models", "60", "0.25", "7", "120", "no", "0.01"], strict=True))
    s = TrainSettings.from_env({**env, "DS_DB_PASSWORD": "pw"})
    assert (s.model_dir, s.wait_timeout, s.test_size, s.seed) == (Path("/srv/models"), 60.0, 0.25, 7)
    assert (s.time_limit, s.promote, s.tolerance) == (120.0, False, 0.01)
    assert s.database.password == "pw" and "pw" not in repr(s)


def test_command_line_options_are_never_read_from_the_environment() -> None:
    env = {"TRAIN_PARAMS": '{"max_iter": 1}', "TRAIN_STRICT": "1", "STRICT": "1", "TRAIN_WARM_START_FROM": "v1"}
    assert TrainSettings.from_env(env) == TrainSettings.from_env({})


@pytest.mark.parametrize(
    ("raw", "promote"), [("1", True), ("0", False), ("true", True), ("False", False), ("yes", True)]
)
def test_promote_is_a_boolean(raw: str, promote: bool) -> None:
    assert TrainSettings.from_env({"TRAIN_PROMOTE": raw}).promote is promote


def test_a_zero_time_limit_means_none() -> None:
    assert TrainSettings.from_env({"TRAIN_TIME_LIMIT": "0"}).time_limit is None


def test_empty_values_mean_the_default() -> None:
    assert TrainSettings.from_env(dict.fromkeys(VARIABLES, "")) == TrainSettings.from_env({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRAIN_SEED": "4.5"}, "TRAIN_SEED='4.5' is not a whole number"),
        ({"TRAIN_SEED": "-1"}, "TRAIN_SEED='-1' must be greater than or equal to 0"),
        ({"TRAIN_SEED": str(2**32)}, f"TRAIN_SEED='{2**32}' must be less than {2**32}"),
        ({"TRAIN_WAIT_TIMEOUT": "0"}, "TRAIN_WAIT_TIMEOUT='0' must be greater than 0"),
        ({"TRAIN_TEST_SIZE": "1"}, "TRAIN_TEST_SIZE='1' must be less than 1"),
        ({"TRAIN_TEST_SIZE": "a fifth"}, "TRAIN_TEST_SIZE='a fifth' is not a number"),
        ({"TRAIN_TIME_LIMIT": "-0.5"}, "TRAIN_TIME_LIMIT='-0.5' must be greater than or equal to 0"),
        ({"TRAIN_PROMOTE": "maybe"}, "TRAIN_PROMOTE='maybe' is not a boolean"),
        ({"TRAIN_PROMOTION_TOLERANCE": "-0.1"}, "TRAIN_PROMOTION_TOLERANCE='-0.1' must be greater than or equal to 0"),
        ({"DB_PORT": "5432.5"}, "DB_PORT='5432.5' is not a TCP port number"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TrainSettings.from_env(env)
    assert message in str(raised.value)


def test_the_command_line_overrides_by_copy() -> None:
    s = TrainSettings.from_env({}).model_copy(update={"params": {"max_iter": 5}, "strict": True})
    assert s.params == {"max_iter": 5} and s.strict and s.seed == 42
