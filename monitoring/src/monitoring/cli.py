"""`companydata-monitor report --since YYYY-MM-DD --until YYYY-MM-DD` (or `python -m monitoring`):
the drift report of a period, as Dagster's `drift_report` makes it for a day. And
`companydata-monitor ui [--host H] [--port 8085]`: Evidently's UI on MONITORING_WORKSPACE (what
`evidently ui --workspace DIR` runs, with this package's pandas 3 shim; see evidently_compat).

Exit status: 0 the report is written and no threshold was crossed; 3 the report is written and
a threshold was crossed (logged as ERROR, alerted once per period); 1 an error (no champion, the
database, the model directory); 2 a usage error (a malformed date, `--until` before `--since`, a
period in the future, a bad setting), the message naming the value.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import psycopg2

from machine_learning_engineering.cli import EXIT_OK, EXIT_USAGE, run
from machine_learning_engineering.config import ConfigError
from machine_learning_engineering.db import first_line
from monitoring import MonitoringError
from monitoring.config import MonitorSettings
from monitoring.period import Period

log = logging.getLogger("monitoring")

# The report is written; a threshold was crossed.
EXIT_BREACHED = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="companydata-monitor",
        description="Drift reports: the champion's reference sample against the API's predictions and the batch"
        " scores of a period (Evidently).",
        epilog="exit status: 0 written, within thresholds; 3 written, a threshold crossed; 1 error; 2 usage error",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = sub.add_parser(
        "report",
        help="compare a period (whole UTC days, both inclusive) with the champion's reference",
        description="Compare a period (whole UTC days, both inclusive) with the champion's reference: metrics to"
        " monitoring_metrics (replacing the period's), the HTML report to REPORTS_DIR, a run in"
        " MONITORING_WORKSPACE, an alert per crossed threshold.",
    )
    report.add_argument("--since", required=True, metavar="YYYY-MM-DD", help="the first day of the period")
    report.add_argument("--until", required=True, metavar="YYYY-MM-DD", help="the last day of the period (included)")
    ui = sub.add_parser(
        "ui",
        help="serve Evidently's UI on MONITORING_WORKSPACE (the runs and the dashboard)",
        description="Evidently's UI (dashboard and reports over time) on the workspace the reports are stored in.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: no login)")
    ui.add_argument("--port", type=int, default=8085, help="port (default 8085)")
    ui.add_argument("--workspace", type=Path, help="the workspace (default: $MONITORING_WORKSPACE)")
    return p


def serve_ui(host: str, port: int, workspace: Path) -> None:
    """Evidently's UI service on `workspace`, until interrupted."""
    from evidently.ui.service.app import get_config
    from evidently.ui.service.app import run as run_service

    workspace.mkdir(parents=True, exist_ok=True)
    log.info("Evidently UI on http://%s:%d/ (workspace %s)", host, port, workspace)
    run_service(
        get_config(
            host=host, port=port, workspace=str(workspace), secret=None, request_max_body_size=None, conf_path=None
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    period = Period.parse(args.since, args.until) if args.command == "report" else None
    try:
        settings = MonitorSettings.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    if period is None:
        serve_ui(args.host, args.port, args.workspace or settings.workspace)
        return EXIT_OK
    from monitoring.job import run_report  # Evidently loads in seconds: not for a usage error

    try:
        result = run_report(settings, period)
    except psycopg2.Error as exc:
        raise MonitoringError(f"the database {settings.database.where}: {first_line(exc)}") from None
    for source, path in result.html.items():
        log.info("%s report: %s", source, path)
    return EXIT_BREACHED if result.breached else EXIT_OK


entry = run(main)
