from __future__ import annotations

from pathlib import Path

import pytest

from machine_learning_engineering.config import ROLE_LOGINS, ConfigError, DatabaseSettings, PredictionLogSettings


def test_defaults_are_the_documented_development_ones() -> None:
    s = DatabaseSettings.from_env("ds", {})
    assert (s.host, s.port, s.name, s.user, s.password) == ("localhost", 5432, "companydata", "ds_user", "ds_user")
    assert s.connect_timeout == 60.0 and s.where == "ds_user@localhost:5432/companydata"


def test_environment_overrides_per_role() -> None:
    env = {"DB_HOSTNAME": "operational-db", "DB_PORT": "6543", "DB_NAME": "x", "MLE_DB_PASSWORD": "s3cret"}
    s = DatabaseSettings.from_env("mle", env)
    assert (s.host, s.port, s.name, s.user, s.password) == ("operational-db", 6543, "x", "mle_user", "s3cret")
    assert DatabaseSettings.from_env("admin", env).password == "admin"


def test_every_variable_is_read() -> None:
    assert DatabaseSettings.variables() == {
        "host": "DB_HOSTNAME",
        "port": "DB_PORT",
        "name": "DB_NAME",
        "connect_timeout": "DB_CONNECT_TIMEOUT",
    }
    assert DatabaseSettings.from_env("etl", {"DB_CONNECT_TIMEOUT": "2.5"}).connect_timeout == 2.5
    for role, (user, variable) in ROLE_LOGINS.items():
        s = DatabaseSettings.from_env(role, {variable: "pw"})  # type: ignore[arg-type]
        assert (s.user, s.password) == (user, "pw")
    # The login name comes from the role, never from the environment.
    assert DatabaseSettings.from_env("ds", {"DB_USER": "admin", "DB_PASSWORD": "x"}).user == "ds_user"


def test_empty_values_mean_the_default() -> None:
    """Compose passes an unset `${X:-}` as the empty string."""
    env = dict.fromkeys(["DB_HOSTNAME", "DB_PORT", "DB_NAME", "DB_CONNECT_TIMEOUT", "DS_DB_PASSWORD"], "")
    assert DatabaseSettings.from_env("ds", env) == DatabaseSettings.from_env("ds", {})


def test_password_never_shows_in_repr() -> None:
    s = DatabaseSettings.from_env("admin", {"ADMIN_DB_PASSWORD": "s3cret"})
    assert s.password == "s3cret" and isinstance(s.password, str)  # as psycopg2 and SQLAlchemy take it
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)
    logs = PredictionLogSettings.from_env({"MLE_DB_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(logs) and "s3cret" not in str(logs)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_PORT": "abc"}, "DB_PORT='abc' is not a TCP port number"),
        ({"DB_PORT": "70000"}, "DB_PORT='70000'"),
        ({"DB_CONNECT_TIMEOUT": "soon"}, "DB_CONNECT_TIMEOUT='soon' is not a number"),
        ({"DB_CONNECT_TIMEOUT": "-1"}, "must be greater than 0"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DatabaseSettings.from_env("admin", env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_PORT": "5432.5"}, "DB_PORT='5432.5' is not a TCP port number"),
        ({"DB_PORT": "0"}, "DB_PORT='0' is not a TCP port number"),
        ({"DB_PORT": "65536"}, "DB_PORT='65536' is not a TCP port number"),
        ({"DB_CONNECT_TIMEOUT": "0"}, "DB_CONNECT_TIMEOUT='0' must be greater than 0"),
        ({"DB_CONNECT_TIMEOUT": "inf"}, "DB_CONNECT_TIMEOUT='inf' is not a finite number"),
    ],
)
def test_fractional_out_of_range_and_infinite_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DatabaseSettings.from_env("ds", env)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        DatabaseSettings.from_env("ds", {"DB_PORT": "x", "DB_CONNECT_TIMEOUT": "y"})
    assert "DB_PORT='x'" in str(raised.value) and "DB_CONNECT_TIMEOUT='y'" in str(raised.value)


def test_unknown_role() -> None:
    with pytest.raises(ConfigError, match="unknown database role 'root'"):
        DatabaseSettings.from_env("root", {})  # type: ignore[arg-type]


def test_the_prediction_log_defaults() -> None:
    s = PredictionLogSettings.from_env({})
    assert (s.spool_dir, s.capacity, s.shutdown_flush_seconds, s.outage_unready_seconds) == (None, 100_000, 5.0, 60.0)
    assert s.database == DatabaseSettings.from_env("mle", {})


def test_the_prediction_log_reads_every_variable_from_the_mapping_given() -> None:
    env = {
        "PREDICTION_SPOOL_DIR": "/var/spool/predictions",
        "PREDICTION_LOG_CAPACITY": "500",
        "PREDICTION_LOG_SHUTDOWN_SECONDS": "1.5",
        "READY_LOG_OUTAGE_SECONDS": "30",
        "DB_NAME": "elsewhere",
        "MLE_DB_PASSWORD": "pw",
    }
    s = PredictionLogSettings.from_env(env)
    assert (s.spool_dir, s.capacity, s.shutdown_flush_seconds, s.outage_unready_seconds) == (
        Path("/var/spool/predictions"),
        500,
        1.5,
        30.0,
    )
    # The nested database settings read the same mapping, not os.environ.
    assert (s.database.name, s.database.user, s.database.password) == ("elsewhere", "mle_user", "pw")
    assert set(PredictionLogSettings.variables().values()) == set(env) - {"DB_NAME", "MLE_DB_PASSWORD"}
    assert PredictionLogSettings.from_env(dict.fromkeys(env, "")) == PredictionLogSettings.from_env({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PREDICTION_LOG_CAPACITY": "2.7"}, "PREDICTION_LOG_CAPACITY='2.7' is not a whole number"),
        ({"PREDICTION_LOG_CAPACITY": "0"}, "PREDICTION_LOG_CAPACITY='0' must be greater than 0"),
        ({"PREDICTION_LOG_CAPACITY": "100000001"}, "PREDICTION_LOG_CAPACITY='100000001' must be less than"),
        ({"PREDICTION_LOG_SHUTDOWN_SECONDS": "600"}, "PREDICTION_LOG_SHUTDOWN_SECONDS='600' must be less than 600"),
        ({"READY_LOG_OUTAGE_SECONDS": "soon"}, "READY_LOG_OUTAGE_SECONDS='soon' is not a number"),
        ({"DB_PORT": "5432.0.1"}, "DB_PORT='5432.0.1' is not a TCP port number"),
    ],
)
def test_bad_prediction_log_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PredictionLogSettings.from_env(env)


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_NAME", "from-the-process")
    assert DatabaseSettings.from_env("ds").name == "from-the-process"
    assert PredictionLogSettings.from_env().database.name == "from-the-process"
    assert DatabaseSettings.from_env("ds", {}).name == "companydata"  # a mapping replaces it


def test_constructed_directly_settings_read_nothing_and_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOSTNAME", "not-read")
    s = DatabaseSettings(user="u", password="p", port=1)
    assert (s.host, s.port, s.where) == ("localhost", 1, "u@localhost:1/companydata")
    with pytest.raises(ValueError):
        s.port = 2  # type: ignore[misc]
    assert s.model_copy(update={"password": "wrong"}).password == "wrong"


def test_registry_settings_read_model_dir_and_class() -> None:
    from machine_learning_engineering.config import RegistrySettings

    assert RegistrySettings.from_env({}).model_dir == Path("models")
    custom = RegistrySettings.from_env({"MODEL_DIR": "/models", "MODEL_CLASS": "pkg.mod:Model"})
    assert (custom.model_dir, custom.model_class) == (Path("/models"), "pkg.mod:Model")
    assert sorted(RegistrySettings.variables().values()) == ["MODEL_CLASS", "MODEL_DIR"]
