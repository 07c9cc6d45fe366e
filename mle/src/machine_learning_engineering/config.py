"""Database settings for each role, read from the environment here and nowhere else.

Names follow the challenge's compose file, so the same `.env` drives Docker and local runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["admin", "etl", "ds", "mle", "api_admin"]

# Role -> (login name, variable holding its password). The login names are fixed by the
# database bootstrap (de/db/init); only the passwords are deployment secrets. `admin` is the
# superuser, used by the bootstrap alone; every service logs in as the role its job needs.
ROLE_LOGINS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "ADMIN_DB_PASSWORD"),
    "etl": ("etl_user", "ETL_DB_PASSWORD"),
    "ds": ("ds_user", "DS_DB_PASSWORD"),
    "mle": ("mle_user", "MLE_DB_PASSWORD"),
    "api_admin": ("api_admin", "API_ADMIN_DB_PASSWORD"),
}
# The shortest API_TOKEN a production stack accepts.
MIN_PRODUCTION_TOKEN = 16


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def number_from_env(
    env: Mapping[str, str], name: str, default: float, low: float = 0.0, high: float = float("inf")
) -> float:
    """A number strictly between low and high, or the default when the variable is unset or empty."""
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low < value < high:
        bound = f"greater than {low:g}" if high == float("inf") else f"between {low:g} and {high:g}"
        raise ConfigError(f"{name}={raw!r} must be {bound}")
    return value


@dataclass(frozen=True)
class DatabaseSettings:
    """Where and as whom to connect. The password stays out of repr() and logs."""

    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)
    connect_timeout: float = 60.0

    @classmethod
    def from_env(cls, role: Role, env: Mapping[str, str] | None = None) -> DatabaseSettings:
        env = os.environ if env is None else env
        if role not in ROLE_LOGINS:
            raise ConfigError(f"unknown database role {role!r}; expected one of {sorted(ROLE_LOGINS)}")
        user, password_var = ROLE_LOGINS[role]
        port_raw = env.get("DB_PORT", "") or "5432"
        if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
            raise ConfigError(f"DB_PORT={port_raw!r} is not a TCP port number")
        return cls(
            host=env.get("DB_HOSTNAME", "") or "localhost",
            port=int(port_raw),
            name=env.get("DB_NAME", "") or "companydata",
            user=user,
            # Development default: the password equals the login name (see .env.example).
            password=env.get(password_var, "") or user,
            connect_timeout=number_from_env(env, "DB_CONNECT_TIMEOUT", 60.0),
        )

    @property
    def where(self) -> str:
        """A log-safe description of the target."""
        return f"{self.user}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class PredictionLogSettings:
    """How the prediction log buffers, spools and reports (the API's writer of `predictions`)."""

    database: DatabaseSettings
    # Where unwritten records go on shutdown or overflow, to be replayed later; None: nowhere.
    spool_dir: Path | None = None
    capacity: int = 100_000
    shutdown_flush_seconds: float = 5.0
    # How long the log may be unwritable before /ready says so with a 503.
    outage_unready_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PredictionLogSettings:
        env = os.environ if env is None else env
        spool = env.get("PREDICTION_SPOOL_DIR", "")
        return cls(
            database=DatabaseSettings.from_env("mle", env),
            spool_dir=Path(spool) if spool else None,
            capacity=int(number_from_env(env, "PREDICTION_LOG_CAPACITY", 100_000, 0, 100_000_001)),
            shutdown_flush_seconds=number_from_env(env, "PREDICTION_LOG_SHUTDOWN_SECONDS", 5.0, 0, 600),
            outage_unready_seconds=number_from_env(env, "READY_LOG_OUTAGE_SECONDS", 60.0, 0, 86_400),
        )


def production_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """Why this environment must not run as `STACK_ENV=production` (empty when it may).

    The documented development defaults (each password equal to its login name) are public:
    a production stack that still uses one is open to anyone who read the README.
    """
    env = os.environ if env is None else env
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
