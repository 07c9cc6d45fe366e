"""Drift monitoring: the champion's reference sample against the predictions and batch scores of
a period, with Evidently; metrics to `monitoring_metrics`, HTML reports, an Evidently workspace,
and alerts when a threshold is crossed.

One module per job: `config` (settings), `period` (the dates a report covers), `data` (reading
the period's rows), `report` (the Evidently report: a pure function), `metrics` (writing the
period's rows), `alerts` (thresholds, the webhook), `workspace` (Evidently's workspace and
dashboard), `job` (all of it for one period) and `cli` (`companydata-monitor`).
"""

from machine_learning_engineering.errors import StackError

# Before anything imports Evidently: it needs a pandas helper pandas 3.1 dropped (see the module).
from monitoring import evidently_compat as _evidently_compat  # noqa: F401

__version__ = "0.1.0"


class MonitoringError(StackError):
    """A drift report could not be made; the message says why."""


class PeriodError(MonitoringError, ValueError):
    """A period that cannot be reported on (a malformed date, `--until` before `--since`, ...);
    the message names the value."""

    exit_code = 2


class NoChampion(MonitoringError):
    """No champion to compare with: train and promote a model first."""
