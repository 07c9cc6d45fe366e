"""ETL settings, read from the environment here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.settings import StackSettings

# PostgreSQL takes timeouts in whole milliseconds (0 would mean "no timeout").
Seconds = Annotated[float, Field(ge=0.001, le=86_400)]


class LockSettings(StackSettings):
    """How long the ETL waits for other sessions, in seconds: ETL_LOCK_TIMEOUT, ETL_LOCK_WAIT,
    ETL_STATEMENT_TIMEOUT.

    lock_timeout: one attempt at a lock (readers queued behind the ETL wait at most this);
    lock_wait: all attempts at one set of locks (the run lock, the swaps' table locks);
    statement_timeout: each statement of the swaps, once their locks are held.
    """

    model_config = SettingsConfigDict(env_prefix="ETL_")

    lock_timeout: Seconds = 2.0
    lock_wait: Seconds = 300.0
    statement_timeout: Seconds = 60.0

    @model_validator(mode="after")
    def _wait_covers_one_attempt(self) -> Self:
        if self.lock_wait < self.lock_timeout:
            raise ValueError(
                f"ETL_LOCK_WAIT ({self.lock_wait:g} s) must be at least ETL_LOCK_TIMEOUT ({self.lock_timeout:g} s)"
            )
        return self


class EtlSettings(StackSettings):
    """RAW_DATA_DIR, the ETL_* lock settings, and the `etl` login's DB_* variables."""

    raw_data_dir: Path = Path("data/raw")
    # etl_user owns the data tables it creates and replaces; it is not a superuser.
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings.from_env("etl"))
    locks: LockSettings = Field(default_factory=LockSettings.from_env)
