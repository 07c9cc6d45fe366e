"""ETL settings, read from the environment here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from machine_learning_engineering.config import ConfigError, DatabaseSettings, number_from_env

# PostgreSQL takes timeouts in whole milliseconds (0 would mean "no timeout").
_MIN_SECONDS, _MAX_SECONDS = 0.001, 86_400.0
_VARIABLES = {
    "lock_timeout": "ETL_LOCK_TIMEOUT",
    "lock_wait": "ETL_LOCK_WAIT",
    "statement_timeout": "ETL_STATEMENT_TIMEOUT",
}


@dataclass(frozen=True)
class LockSettings:
    """How long the ETL waits for other sessions, in seconds.

    lock_timeout: one attempt at a lock (readers queued behind the ETL wait at most this);
    lock_wait: all attempts at one set of locks (the run lock, the swaps' table locks);
    statement_timeout: each statement of the swaps, once their locks are held.
    """

    lock_timeout: float = 2.0
    lock_wait: float = 300.0
    statement_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name, variable in _VARIABLES.items():
            if not _MIN_SECONDS <= getattr(self, name) <= _MAX_SECONDS:
                raise ConfigError(
                    f"{variable}={getattr(self, name)!r} must be from {_MIN_SECONDS:g} to {_MAX_SECONDS:g} s"
                )
        if self.lock_wait < self.lock_timeout:
            raise ConfigError(
                f"ETL_LOCK_WAIT ({self.lock_wait:g} s) must be at least ETL_LOCK_TIMEOUT ({self.lock_timeout:g} s)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LockSettings:
        return cls(
            **{name: number_from_env(env, variable, getattr(cls, name)) for name, variable in _VARIABLES.items()}
        )


@dataclass(frozen=True)
class EtlSettings:
    raw_data_dir: Path
    database: DatabaseSettings
    locks: LockSettings = field(default_factory=LockSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EtlSettings:
        env = os.environ if env is None else env
        return cls(
            raw_data_dir=Path(env.get("RAW_DATA_DIR", "") or "data/raw"),
            # etl_user owns the data tables it creates and replaces; it is not a superuser.
            database=DatabaseSettings.from_env("etl", env),
            locks=LockSettings.from_env(env),
        )
