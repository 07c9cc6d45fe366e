"""Writing a period's metrics to `monitoring_metrics`, as the `monitor` login.

One transaction per period: the period's rows are deleted and the new ones inserted, so a
re-run of the period leaves exactly the rows of its last run (never a mix of two), and a reader
sees the old rows or the new ones. The table (bootstrap/80-monitoring.sh) is keyed by period,
source, metric and feature; `model_version` is the champion whose reference the period was
compared with.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from psycopg2.extras import execute_values

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect
from monitoring.data import query
from monitoring.period import Period


class MetricRow(NamedTuple):
    """One metric of one source (`feature` "" for the whole source); `value` None when it
    could not be computed (stored as NULL)."""

    source: str
    metric: str
    feature: str
    value: float | None


def replace_period(settings: DatabaseSettings, period: Period, model_version: str, rows: Iterable[MetricRow]) -> int:
    """The period's metrics in place of whatever it held, in one transaction; rows replaced."""
    values = [(period.since, period.until, model_version, *row) for row in rows]
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query("delete_metrics"), {"since": period.since, "until": period.until})
            replaced = cur.rowcount
            if values:
                execute_values(cur, query("insert_metrics"), values, page_size=1_000)
            return replaced
    finally:
        conn.close()


def read_period(settings: DatabaseSettings, period: Period) -> list[tuple[str, str, str, str, float | None]]:
    """(model_version, source, metric, feature, value) of a period, sorted: for tests and tools."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT model_version, source, metric, feature, value FROM monitoring_metrics"
                " WHERE period_start = %s AND period_end = %s ORDER BY source, metric, feature",
                (period.since, period.until),
            )
            return list(cur.fetchall())
    finally:
        conn.close()
