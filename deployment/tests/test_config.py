from __future__ import annotations

from pathlib import Path

import pytest

from deployment.config import ServeSettings
from machine_learning_engineering.config import MIN_PRODUCTION_TOKEN, ROLE_LOGINS, ConfigError

VARIABLES = [
    "MODEL_DIR",
    "MODEL_CLASS",
    "API_TOKEN",
    "MAX_BATCH_SIZE",
    "MAX_COLUMNAR_ROWS",
    "MAX_BODY_BYTES",
    "MODEL_POLL_SECONDS",
    "API_KEYS_REFRESH_SECONDS",
    "OOD_POLICY",
]


def test_defaults() -> None:
    s = ServeSettings.from_env({})
    assert (s.model_dir, s.model_class, s.api_token) == (Path("models"), "customer", None)
    assert (s.max_batch, s.max_columns, s.max_body_bytes) == (1000, 10_000, 1 << 20)
    assert (s.model_poll_seconds, s.key_refresh_seconds) == (2.0, 5.0)
    assert s.ood_policy == "flag"


def test_every_variable_is_read() -> None:
    assert sorted(ServeSettings.variables().values()) == sorted(VARIABLES)
    values = ["/srv/models", "testkit.toy_model:PlanModel", "a-token", "20", "500", "2048", "0.5", "30", "reject"]
    s = ServeSettings.from_env(dict(zip(VARIABLES, values, strict=True)))
    assert (s.model_dir, s.model_class, s.api_token) == (Path("/srv/models"), "testkit.toy_model:PlanModel", "a-token")
    assert (s.max_batch, s.max_columns, s.max_body_bytes) == (20, 500, 2048)
    assert (s.model_poll_seconds, s.key_refresh_seconds) == (0.5, 30.0)
    assert s.ood_policy == "reject"


def test_empty_values_mean_the_default() -> None:
    assert ServeSettings.from_env(dict.fromkeys(VARIABLES, "")) == ServeSettings.from_env({})


def test_the_token_never_shows_in_repr() -> None:
    s = ServeSettings.from_env({"API_TOKEN": "s3cret-token"})
    assert s.api_token == "s3cret-token" and "s3cret-token" not in repr(s) and "s3cret-token" not in str(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_BATCH_SIZE": "2.7"}, "MAX_BATCH_SIZE='2.7' is not a whole number"),
        ({"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE='0' must be greater than 0"),
        ({"MAX_BATCH_SIZE": "100001"}, "MAX_BATCH_SIZE='100001' must be less than 100001"),
        ({"MAX_BODY_BYTES": "1023"}, "MAX_BODY_BYTES='1023' must be greater than 1023"),
        ({"MAX_BODY_BYTES": "1MiB"}, "MAX_BODY_BYTES='1MiB' is not a whole number"),
        ({"MODEL_POLL_SECONDS": "often"}, "MODEL_POLL_SECONDS='often' is not a number"),
        ({"MODEL_POLL_SECONDS": "3600"}, "MODEL_POLL_SECONDS='3600' must be less than 3600"),
        ({"API_KEYS_REFRESH_SECONDS": "0"}, "API_KEYS_REFRESH_SECONDS='0' must be greater than 0"),
        ({"OOD_POLICY": "block"}, "OOD_POLICY='block' must be 'flag' or 'reject'"),
        ({"OOD_POLICY": "FLAG"}, "OOD_POLICY='FLAG' must be 'flag' or 'reject'"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ServeSettings.from_env(env)
    assert message in str(raised.value)


def test_a_production_stack_with_development_secrets_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"STACK_ENV=production: .*API_TOKEN is unset"):
        ServeSettings.from_env({"STACK_ENV": "production"})
    strong = {variable: f"{user}-not-the-default" for user, variable in ROLE_LOGINS.values()}
    token = "t" * MIN_PRODUCTION_TOKEN
    assert ServeSettings.from_env({"STACK_ENV": "production", **strong, "API_TOKEN": token}).api_token == token


def test_constructed_directly_with_the_values_given() -> None:
    s = ServeSettings(model_dir=Path("m"), max_batch=20)
    assert (s.model_dir, s.max_batch, s.api_token, s.model_class) == (Path("m"), 20, None, "customer")
