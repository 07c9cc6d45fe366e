"""Database settings for each role, read from the environment here and nowhere else.

Names follow the challenge's compose file, so the same `.env` drives Docker and local runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["admin", "ds", "mle"]

# Role -> (login name, variable holding its password). The login names are fixed by the
# database bootstrap (de/db/init); only the passwords are deployment secrets.
ROLE_LOGINS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "ADMIN_DB_PASSWORD"),
    "ds": ("ds_user", "DS_DB_PASSWORD"),
    "mle": ("mle_user", "MLE_DB_PASSWORD"),
}


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
