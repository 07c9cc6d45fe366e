from __future__ import annotations

from pathlib import Path

import pytest

from data_engineering.config import EtlSettings, LockSettings
from machine_learning_engineering.config import ConfigError, DatabaseSettings

LOCK_VARIABLES = ["ETL_LOCK_TIMEOUT", "ETL_LOCK_WAIT", "ETL_STATEMENT_TIMEOUT"]


def test_defaults() -> None:
    s = EtlSettings.from_env({})
    assert s.raw_data_dir == Path("data/raw") and s.database == DatabaseSettings.from_env("etl", {})
    assert s.locks == LockSettings() == LockSettings(lock_timeout=2.0, lock_wait=300.0, statement_timeout=60.0)


def test_every_variable_is_read() -> None:
    assert EtlSettings.variables() == {"raw_data_dir": "RAW_DATA_DIR"}
    assert list(LockSettings.variables().values()) == LOCK_VARIABLES
    env = {
        "RAW_DATA_DIR": "/data/raw",
        "ETL_LOCK_TIMEOUT": "0.5",
        "ETL_LOCK_WAIT": "30",
        "ETL_STATEMENT_TIMEOUT": "10",
        "DB_HOSTNAME": "operational-db",
        "ETL_DB_PASSWORD": "pw",
    }
    s = EtlSettings.from_env(env)
    assert s.raw_data_dir == Path("/data/raw")
    assert s.locks == LockSettings(lock_timeout=0.5, lock_wait=30, statement_timeout=10)
    assert (s.database.host, s.database.user, s.database.password) == ("operational-db", "etl_user", "pw")
    assert "pw" not in repr(s)


def test_empty_values_mean_the_default() -> None:
    empty = dict.fromkeys(["RAW_DATA_DIR", *LOCK_VARIABLES, "DB_PORT"], "")
    assert EtlSettings.from_env(empty) == EtlSettings.from_env({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ETL_LOCK_WAIT": "soon"}, "ETL_LOCK_WAIT='soon' is not a number"),
        ({"ETL_LOCK_TIMEOUT": "0"}, "ETL_LOCK_TIMEOUT='0' must be greater than or equal to 0.001"),
        ({"ETL_STATEMENT_TIMEOUT": "86401"}, "ETL_STATEMENT_TIMEOUT='86401' must be less than or equal to 86400"),
        ({"ETL_STATEMENT_TIMEOUT": "nan"}, "ETL_STATEMENT_TIMEOUT='nan' is not a finite number"),
        (
            {"ETL_LOCK_TIMEOUT": "10", "ETL_LOCK_WAIT": "5"},
            "ETL_LOCK_WAIT (5 s) must be at least ETL_LOCK_TIMEOUT (10 s)",
        ),
        ({"DB_PORT": "5432.5"}, "DB_PORT='5432.5' is not a TCP port number"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        EtlSettings.from_env(env)
    assert message in str(raised.value)


def test_lock_settings_constructed_directly_are_validated_too() -> None:
    with pytest.raises(ValueError, match="ETL_LOCK_WAIT"):
        LockSettings(lock_timeout=3, lock_wait=1)
