from __future__ import annotations

import pytest

from machine_learning_engineering.config import ConfigError, DatabaseSettings


def test_defaults_are_the_documented_development_ones() -> None:
    s = DatabaseSettings.from_env("ds", {})
    assert (s.host, s.port, s.name, s.user, s.password) == ("localhost", 5432, "companydata", "ds_user", "ds_user")


def test_environment_overrides_per_role() -> None:
    env = {"DB_HOSTNAME": "operational-db", "DB_PORT": "6543", "DB_NAME": "x", "MLE_DB_PASSWORD": "s3cret"}
    s = DatabaseSettings.from_env("mle", env)
    assert (s.host, s.port, s.name, s.user, s.password) == ("operational-db", 6543, "x", "mle_user", "s3cret")
    assert DatabaseSettings.from_env("admin", env).password == "admin"


def test_password_never_shows_in_repr() -> None:
    assert "s3cret" not in repr(DatabaseSettings.from_env("admin", {"ADMIN_DB_PASSWORD": "s3cret"}))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_PORT": "abc"}, "DB_PORT='abc' is not a TCP port number"),
        ({"DB_PORT": "70000"}, "DB_PORT='70000'"),
        ({"DB_CONNECT_TIMEOUT": "soon"}, "DB_CONNECT_TIMEOUT='soon' is not a number"),
        ({"DB_CONNECT_TIMEOUT": "-1"}, "must be greater than 0"),
    ],
)
def test_bad_settings_name_the_variable(env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        DatabaseSettings.from_env("admin", env)


def test_unknown_role() -> None:
    with pytest.raises(ConfigError, match="unknown database role 'root'"):
        DatabaseSettings.from_env("root", {})  # type: ignore[arg-type]
