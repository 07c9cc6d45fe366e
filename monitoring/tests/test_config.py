"""The monitor's settings: defaults, the variables that set them, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from machine_learning_engineering.config import ConfigError
from monitoring.config import AlertSettings, MonitorSettings, Thresholds


def test_the_defaults_need_no_environment() -> None:
    settings = MonitorSettings.from_env({})
    assert settings.thresholds == Thresholds(
        drift_share=0.5, max_ood_rate=0.05, max_missing_increase=0.05, min_rows=500
    )
    assert settings.alerts.webhook_url is None and settings.alerts.retries == 3
    assert settings.reports_dir == Path("reports/html") and settings.workspace == Path("reports/workspace")
    assert settings.database.user == "monitor_user" and settings.database.password == "monitor_user"
    assert settings.registry.model_dir == Path("models") and settings.registry.model_class == "customer"


def test_every_variable_sets_its_field() -> None:
    settings = MonitorSettings.from_env(
        {
            "MONITOR_DRIFT_SHARE": "0.25",
            "MONITOR_MAX_OOD_RATE": "0.1",
            "MONITOR_MAX_MISSING_INCREASE": "0.02",
            "MONITOR_MIN_ROWS": "1000",
            "ALERT_WEBHOOK_URL": "https://hooks.example.com/T0/B0/secret-token",
            "ALERT_TIMEOUT_SECONDS": "3",
            "ALERT_RETRIES": "5",
            "ALERT_BACKOFF_SECONDS": "0.5",
            "REPORTS_DIR": "/srv/reports/html",
            "MONITORING_WORKSPACE": "/srv/reports/workspace",
            "MODEL_DIR": "/models",
            "MONITOR_DB_PASSWORD": "s3cret",
            "DB_HOSTNAME": "operational-db",
        }
    )
    assert settings.thresholds == Thresholds(
        drift_share=0.25, max_ood_rate=0.1, max_missing_increase=0.02, min_rows=1000
    )
    assert settings.alerts == AlertSettings(
        webhook_url="https://hooks.example.com/T0/B0/secret-token", timeout_seconds=3, retries=5, backoff_seconds=0.5
    )
    assert settings.reports_dir == Path("/srv/reports/html") and settings.workspace == Path("/srv/reports/workspace")
    assert settings.registry.model_dir == Path("/models")
    assert (
        settings.database.password == "s3cret"
        and settings.database.where == "monitor_user@operational-db:5432/companydata"
    )


def test_the_webhook_url_stays_out_of_logs() -> None:
    alerts = AlertSettings.from_env({"ALERT_WEBHOOK_URL": "https://user:pw@hooks.example.com:8443/T0/secret?token=x"})
    assert "secret" not in repr(alerts) and "pw" not in alerts.where
    assert alerts.where == "https://hooks.example.com:8443"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MONITOR_DRIFT_SHARE", "0", "MONITOR_DRIFT_SHARE='0' must be greater than 0"),
        ("MONITOR_DRIFT_SHARE", "1.5", "MONITOR_DRIFT_SHARE='1.5' must be less than or equal to 1"),
        ("MONITOR_MAX_OOD_RATE", "lots", "MONITOR_MAX_OOD_RATE='lots' is not a number"),
        ("MONITOR_MIN_ROWS", "0", "MONITOR_MIN_ROWS='0' must be greater than or equal to 1"),
        ("MONITOR_MIN_ROWS", "2.5", "MONITOR_MIN_ROWS='2.5' is not a whole number"),
        ("ALERT_WEBHOOK_URL", "hooks.example.com/x", "ALERT_WEBHOOK_URL='hooks.example.com/x' must be an http"),
        ("ALERT_WEBHOOK_URL", "ftp://hooks.example.com/x", "ALERT_WEBHOOK_URL='ftp://hooks.example.com/x' must be"),
        ("ALERT_RETRIES", "-1", "ALERT_RETRIES='-1' must be greater than or equal to 0"),
        ("ALERT_TIMEOUT_SECONDS", "0", "ALERT_TIMEOUT_SECONDS='0' must be greater than 0"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        MonitorSettings.from_env({variable: value})
