"""ETL settings, read from the environment here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.settings import NOT_FROM_ENV, StackSettings

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


Share = Annotated[float, Field(ge=0.0, le=1.0)]


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of the data checks (data_engineering.checks), re-exported there.

    max_drop_share: largest share of a published table's rows a run may drop (ETL_MAX_DROP_SHARE);
    accept_drop: publish a larger drop anyway (`--accept-drop`; never from the environment);
    max_null_share: a non-key column with more NULLs than this share is reported (ETL_MAX_NULL_SHARE);
    min_label_share: a label class rarer than this share is reported (ETL_MIN_LABEL_SHARE);
    max_sales_age_months: the newest sales month may lag the reference month by this many months
    (ETL_MAX_SALES_AGE_MONTHS); the reference is `as_of`'s month (ETL_AS_OF) when set, else the
    newest month folder in the raw files, never the clock, so the checks are reproducible.
    """

    max_drop_share: float = 0.10
    accept_drop: bool = False
    max_null_share: float = 0.5
    min_label_share: float = 0.01
    max_sales_age_months: int = 1
    as_of: date | None = None


class CheckEnv(StackSettings):
    """The environment's thresholds for the data checks: ETL_MAX_DROP_SHARE, ETL_MAX_NULL_SHARE,
    ETL_MIN_LABEL_SHARE, ETL_MAX_SALES_AGE_MONTHS, ETL_AS_OF (YYYY-MM-DD)."""

    model_config = SettingsConfigDict(env_prefix="ETL_")

    max_drop_share: Share = CheckSettings.max_drop_share
    max_null_share: Share = CheckSettings.max_null_share
    min_label_share: Annotated[float, Field(ge=0.0, le=0.5)] = CheckSettings.min_label_share
    max_sales_age_months: Annotated[int, Field(ge=0, le=1200)] = CheckSettings.max_sales_age_months
    as_of: date | None = None

    def check_settings(self) -> CheckSettings:
        return CheckSettings(
            max_drop_share=self.max_drop_share,
            max_null_share=self.max_null_share,
            min_label_share=self.min_label_share,
            max_sales_age_months=self.max_sales_age_months,
            as_of=self.as_of,
        )


def _checks_from_env() -> CheckSettings:
    return CheckEnv.from_env().check_settings()


class EtlSettings(StackSettings):
    """RAW_DATA_DIR, the ETL_* lock and data-check settings, and the `etl` login's DB_* variables."""

    raw_data_dir: Path = Path("data/raw")
    # etl_user owns the data tables it creates and replaces; it is not a superuser.
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings.from_env("etl"))
    locks: LockSettings = Field(default_factory=LockSettings.from_env)
    checks: Annotated[CheckSettings, NOT_FROM_ENV] = Field(default_factory=_checks_from_env)
