"""Resources: each stage's settings, read by the stack's own pydantic settings, and the retry
policy for work that touches the database.

Nothing here reads a variable of its own: `EtlSettings.from_env()` (RAW_DATA_DIR, ETL_*, the
`etl` login's DB_*), `TrainSettings.from_env()` (MODEL_DIR, TRAIN_*, the `ds` login),
`RegistrySettings.from_env()` with the `mle` and `ds` logins (scoring) and
`MonitorSettings.from_env()` (REPORTS_DIR, MONITORING_WORKSPACE, MONITOR_*, ALERT_*, the
`monitor` login: drift reports) are read when a step runs, so the definitions load without a
database and a changed variable needs no reload.
The optional fields override a setting per deployment or test (the UI's launchpad shows them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg2
from dagster import Backoff, ConfigurableResource, Failure, Jitter, RetryPolicy

from data_engineering import DatabaseBusy
from data_engineering.config import EtlSettings
from data_science.config import TrainSettings
from machine_learning_engineering.config import DatabaseSettings, RegistrySettings
from monitoring.config import MonitorSettings

# Worth another attempt: the server restarting or unreachable, or other sessions holding the
# ETL's locks past ETL_LOCK_WAIT (both leave the database unchanged).
TRANSIENT = (psycopg2.OperationalError, DatabaseBusy)

# Steps that touch the database: 10 s, 20 s, 40 s (+-jitter) between attempts. Only the
# TRANSIENT errors are retried: `transient_only` turns any other into a Failure that is not.
DB_RETRY = RetryPolicy(max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


@contextmanager
def transient_only() -> Iterator[None]:
    """Let TRANSIENT errors through to the step's RetryPolicy; fail at once on anything else
    (bad input, bad configuration, a bug: another attempt would fail the same way)."""
    try:
        yield
    except TRANSIENT:
        raise
    except Failure:
        raise
    except Exception as exc:
        raise Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc


class EtlResource(ConfigurableResource["EtlResource"]):
    """The ETL as etl_user: EtlSettings.from_env(); raw_data_dir overrides RAW_DATA_DIR, and
    accept_drop publishes a deliberate row-count drop (`companydata-etl --accept-drop`)."""

    raw_data_dir: str | None = None
    accept_drop: bool = False

    def settings(self) -> EtlSettings:
        settings = EtlSettings.from_env()
        if self.raw_data_dir:
            settings = settings.model_copy(update={"raw_data_dir": Path(self.raw_data_dir)})
        if self.accept_drop:
            settings = settings.model_copy(update={"checks": replace(settings.checks, accept_drop=True)})
        return settings


class TrainingResource(ConfigurableResource["TrainingResource"]):
    """Training as ds_user: TrainSettings.from_env(); model_dir overrides MODEL_DIR."""

    model_dir: str | None = None

    def settings(self) -> TrainSettings:
        settings = TrainSettings.from_env()
        if self.model_dir:
            settings = settings.model_copy(update={"model_dir": Path(self.model_dir)})
        return settings


class ScoringResource(ConfigurableResource["ScoringResource"]):
    """Batch scoring: the champion of MODEL_DIR (class MODEL_CLASS), feature_store read as
    ds_user, batch_predictions written as mle_user. The fields override the variables."""

    model_dir: str | None = None
    model_class: str | None = None

    def registry(self) -> RegistrySettings:
        settings = RegistrySettings.from_env()
        overrides = {"model_dir": Path(self.model_dir) if self.model_dir else None, "model_class": self.model_class}
        return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    def reader(self) -> DatabaseSettings:
        return DatabaseSettings.from_env("ds")

    def writer(self) -> DatabaseSettings:
        return DatabaseSettings.from_env("mle")


class MonitoringResource(ConfigurableResource["MonitoringResource"]):
    """Drift reports as monitor_user: MonitorSettings.from_env(); the fields override MODEL_DIR,
    MODEL_CLASS, REPORTS_DIR and MONITORING_WORKSPACE."""

    model_dir: str | None = None
    model_class: str | None = None
    reports_dir: str | None = None
    workspace: str | None = None

    def settings(self) -> MonitorSettings:
        settings = MonitorSettings.from_env()
        registry = settings.registry.model_copy(
            update={
                k: v
                for k, v in {
                    "model_dir": Path(self.model_dir) if self.model_dir else None,
                    "model_class": self.model_class,
                }.items()
                if v is not None
            }
        )
        update: dict[str, object] = {"registry": registry}
        if self.reports_dir:
            update["reports_dir"] = Path(self.reports_dir)
        if self.workspace:
            update["workspace"] = Path(self.workspace)
        return settings.model_copy(update=update)
