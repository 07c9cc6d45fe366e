"""`companydata-monitor report` (and `python -m monitoring`): exit codes and messages, as a user
sees them, in a real process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from machine_learning_engineering.model import MLEModel
from monitoring.cli import EXIT_BREACHED, main
from testkit.fixtures import TestDatabase

from .conftest import DAY, feature_store, shift

TOMORROW = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()


def monitor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitoring", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2026-13-01", "2026-03-04", "--since '2026-13-01' is not a valid date"),
        ("yesterday", "2026-03-04", "--since 'yesterday' is not a date in the form YYYY-MM-DD"),
        ("2026-03-04", "2026-3-5", "--until '2026-3-5' is not a date in the form YYYY-MM-DD"),
        ("2026-03-04", "2026-02-30", "--until '2026-02-30' is not a valid date"),
        ("2026-03-05", "2026-03-04", "--until 2026-03-04 is before --since 2026-03-05: the period is empty"),
        ("2024-01-01", "2026-03-04", "spans 794 days; at most 366 are reported at once"),
        (TOMORROW, TOMORROW, f"--since {TOMORROW} is in the future"),
    ],
)
def test_a_bad_period_exits_2_naming_the_value(since: str, until: str, message: str) -> None:
    done = monitor("report", "--since", since, "--until", until)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1  # one line, no stack


def test_a_missing_option_is_a_usage_error() -> None:
    done = monitor("report", "--since", "2026-03-04")
    assert done.returncode == 2 and "the following arguments are required: --until" in done.stderr


def test_a_bad_setting_exits_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_DRIFT_SHARE", "1.5")
    assert main(["report", "--since", "2026-03-04", "--until", "2026-03-04"]) == 2


def test_no_champion_exits_1_and_says_what_to_do(env: dict[str, str], model_dir: Path) -> None:
    shutil.rmtree(model_dir)
    done = monitor("report", "--since", "2026-03-04", "--until", "2026-03-04", env=env)
    assert done.returncode == 1
    assert "no champion in" in done.stderr and "train and promote a model first" in done.stderr


def test_an_unreachable_database_exits_1_naming_it(env: dict[str, str]) -> None:
    from testkit.localdb import free_port

    done = monitor(
        "report", "--since", "2026-03-04", "--until", "2026-03-04",
        env={**env, "DB_PORT": str(free_port()), "DB_CONNECT_TIMEOUT": "1"},
    )  # fmt: skip
    assert done.returncode == 1 and "monitor_user@127.0.0.1" in done.stderr and "Traceback" not in done.stderr


def test_report_exits_0_within_thresholds_and_3_when_one_is_crossed(
    env: dict[str, str],
    loaded: TestDatabase,
    champion: MLEModel,
    score_batch: Callable[..., int],
    log_requests: Callable[..., pd.DataFrame],
) -> None:
    score_batch(champion, DAY)
    done = monitor("report", "--since", DAY.isoformat(), "--until", DAY.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    assert "within thresholds" in done.stderr and "batch report:" in done.stderr

    log_requests(champion, shift(feature_store(loaded).sample(n=700, random_state=1)), DAY)
    done = monitor("report", "--since", DAY.isoformat(), "--until", DAY.isoformat(), env=env)
    assert done.returncode == EXIT_BREACHED, done.stderr
    assert "ERROR monitoring: drift alert: 2026-03-04: share of drifted features 0.500" in done.stderr
    assert "not sent: ALERT_WEBHOOK_URL is unset" in done.stderr


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "companydata-monitor"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "report" in done.stdout and "ui" in done.stdout
