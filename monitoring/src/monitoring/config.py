"""The drift monitor's settings, read from the environment here and nowhere else.

- `Thresholds` (MONITOR_*): when a period is judged drifted and an alert goes out;
- `AlertSettings` (ALERT_*): the webhook, its timeout and retries;
- `MonitorSettings`: the above, where the reports and the Evidently workspace go (REPORTS_DIR,
  MONITORING_WORKSPACE), the registry (MODEL_DIR, MODEL_CLASS) and the `monitor` login's DB_*.

The default thresholds were chosen by measurement (docs/drift.md): no alarm on samples of the
training distribution over many seeds, an alarm on the shifted samples of the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from machine_learning_engineering.config import DatabaseSettings, RegistrySettings
from machine_learning_engineering.settings import StackSettings

Share = Annotated[float, Field(ge=0.0, le=1.0)]


class Thresholds(StackSettings):
    """MONITOR_DRIFT_SHARE, MONITOR_MAX_OOD_RATE, MONITOR_MAX_MISSING_INCREASE, MONITOR_MIN_ROWS.

    drift_share: a source drifted when at least this share of the model's features drifted
    (Evidently's DataDriftPreset `drift_share`, each feature judged by Evidently's default test);
    max_ood_rate: alert when more than this share of the judged rows is out of distribution;
    max_missing_increase: alert when a feature is missing in more than its reference share plus
    this (absolute: 0.05 = five percentage points);
    min_rows: a source with fewer rows than this in the period is reported but not judged (no
    alert): too few rows to tell drift from chance.
    """

    model_config = SettingsConfigDict(env_prefix="MONITOR_")

    drift_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    max_ood_rate: Share = 0.05
    max_missing_increase: Share = 0.05
    min_rows: Annotated[int, Field(ge=1, le=100_000_000)] = 500


class AlertSettings(StackSettings):
    """ALERT_WEBHOOK_URL (unset: alerts are recorded and logged, not sent), ALERT_TIMEOUT_SECONDS
    (each attempt), ALERT_RETRIES (attempts after the first), ALERT_BACKOFF_SECONDS (the first
    wait between attempts, doubled each time)."""

    model_config = SettingsConfigDict(env_prefix="ALERT_")

    webhook_url: str | None = Field(None, repr=False)  # may carry a token: kept out of logs
    timeout_seconds: Annotated[float, Field(gt=0.0, le=300.0)] = 5.0
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    backoff_seconds: Annotated[float, Field(ge=0.0, le=300.0)] = 1.0

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def where(self) -> str:
        """The webhook's scheme, host and port: log-safe (no path, query or credentials)."""
        if self.webhook_url is None:
            return "(no webhook)"
        parts = urlsplit(self.webhook_url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


class MonitorSettings(StackSettings):
    """REPORTS_DIR (the HTML reports), MONITORING_WORKSPACE (the Evidently workspace that
    `evidently ui --workspace` shows), the thresholds, the alerts, the registry and the `monitor`
    login's DB_* variables."""

    reports_dir: Path = Field(Path("reports/html"), validation_alias="REPORTS_DIR")
    workspace: Path = Field(Path("reports/workspace"), validation_alias="MONITORING_WORKSPACE")
    thresholds: Thresholds = Field(default_factory=Thresholds.from_env)
    alerts: AlertSettings = Field(default_factory=AlertSettings.from_env)
    registry: RegistrySettings = Field(default_factory=RegistrySettings.from_env)
    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings.from_env("monitor"))
