"""Database settings for each role, read from the environment here and nowhere else.

Names follow the challenge's compose file, so the same `.env` drives Docker and local runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from machine_learning_engineering.settings import NOT_FROM_ENV, ConfigError, StackSettings, TcpPort, environment

__all__ = [
    "MIN_PRODUCTION_TOKEN",
    "ROLE_LOGINS",
    "ConfigError",
    "DatabaseSettings",
    "PredictionLogSettings",
    "Role",
    "production_problems",
]

Role = Literal["admin", "etl", "ds", "mle", "api_admin", "dagster", "monitor"]

# Role -> (login name, variable holding its password). The login names are fixed by the
# database bootstrap (machine_learning_engineering/bootstrap); only the passwords are deployment secrets. `admin` is the
# superuser, used by the bootstrap alone; every service logs in as the role its job needs.
ROLE_LOGINS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "ADMIN_DB_PASSWORD"),
    "etl": ("etl_user", "ETL_DB_PASSWORD"),
    "ds": ("ds_user", "DS_DB_PASSWORD"),
    "mle": ("mle_user", "MLE_DB_PASSWORD"),
    "api_admin": ("api_admin", "API_ADMIN_DB_PASSWORD"),
    # Dagster's run/event/schedule storage: owns the `dagster` database, nothing in companydata
    # (bootstrap/60-dagster.sh). The stages the orchestrator runs log in as etl/ds/mle.
    "dagster": ("dagster", "DAGSTER_DB_PASSWORD"),
    # The drift monitor (`companydata-monitor`, Dagster's drift_report): reads the prediction log and
    # the batch scores, the scored clients' features and labels through two functions, and writes
    # its own tables only (bootstrap/80-monitoring.sh).
    "monitor": ("monitor_user", "MONITOR_DB_PASSWORD"),
}
# The shortest API_TOKEN a production stack accepts.
MIN_PRODUCTION_TOKEN = 16


class DatabaseSettings(StackSettings):
    """Where and as whom to connect: DB_HOSTNAME, DB_PORT, DB_NAME, DB_CONNECT_TIMEOUT, and the
    role's password variable (ROLE_LOGINS). The password stays out of repr() and logs."""

    model_config = SettingsConfigDict(env_prefix="DB_")

    host: str = Field("localhost", validation_alias="DB_HOSTNAME")
    port: TcpPort = 5432
    name: str = "companydata"
    # Seconds `db.connect` keeps retrying while the server starts.
    connect_timeout: float = Field(60.0, gt=0)
    user: Annotated[str, NOT_FROM_ENV]
    password: Annotated[str, NOT_FROM_ENV] = Field(repr=False)

    @classmethod
    def from_env(cls, role: Role, env: Mapping[str, str] | None = None) -> Self:  # type: ignore[override]
        """The settings of `role`'s login (its name and password variable from ROLE_LOGINS)."""
        if role not in ROLE_LOGINS:
            raise ConfigError(f"unknown database role {role!r}; expected one of {sorted(ROLE_LOGINS)}")
        user, password_variable = ROLE_LOGINS[role]
        # Development default: the password equals the login name (see .env.example).
        return cls._read(env, user=user, password=environment(env).get(password_variable) or user)

    @property
    def where(self) -> str:
        """A log-safe description of the target."""
        return f"{self.user}@{self.host}:{self.port}/{self.name}"


class RegistrySettings(StackSettings):
    """MODEL_DIR and MODEL_CLASS: where the versions are and which MLEModel they hold
    (`companydata-registry`; its --model-dir / --model-class override them)."""

    model_dir: Path = Field(Path("models"), validation_alias="MODEL_DIR")
    # An entry point name in `companydata.models`, or `module:Class`.
    model_class: str = Field("customer", validation_alias="MODEL_CLASS")


class PredictionLogSettings(StackSettings):
    """How the prediction log buffers, spools and reports (the API's writer of `predictions`):
    PREDICTION_SPOOL_DIR, PREDICTION_LOG_CAPACITY, PREDICTION_LOG_SHUTDOWN_SECONDS,
    READY_LOG_OUTAGE_SECONDS, and the `mle` login's DB_* variables."""

    model_config = SettingsConfigDict(env_prefix="PREDICTION_LOG_")

    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings.from_env("mle"))
    # Where unwritten records go on shutdown or overflow, to be replayed later; None: nowhere.
    spool_dir: Path | None = Field(None, validation_alias="PREDICTION_SPOOL_DIR")
    capacity: int = Field(100_000, gt=0, lt=100_000_001)
    shutdown_flush_seconds: float = Field(5.0, gt=0, lt=600, validation_alias="PREDICTION_LOG_SHUTDOWN_SECONDS")
    # How long the log may be unwritable before /ready says so with a 503.
    outage_unready_seconds: float = Field(60.0, gt=0, lt=86_400, validation_alias="READY_LOG_OUTAGE_SECONDS")


def production_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """Why this environment must not run as `STACK_ENV=production` (empty when it may).

    The documented development defaults (each password equal to its login name) are public:
    a production stack that still uses one is open to anyone who read the README.
    """
    env = environment(env)
    if (env.get("STACK_ENV", "") or "development").strip().lower() != "production":
        return []
    problems = []
    for user, variable in ROLE_LOGINS.values():
        password = env.get(variable, "")
        if password in ("", user):
            problems.append(f"{variable} is {'unset' if not password else 'the documented default'}: set a password")
    token = env.get("API_TOKEN", "")
    if len(token) < MIN_PRODUCTION_TOKEN:
        problems.append(
            f"API_TOKEN is {'unset' if not token else 'too short'}: production needs a bearer token of at least "
            f"{MIN_PRODUCTION_TOKEN} characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return problems
