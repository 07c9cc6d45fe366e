"""The drift report of one period, end to end: what `companydata-monitor report` and Dagster's
`drift_report` asset run.

1. The champion (MODEL_DIR's champion.json) and its model class (MODEL_CLASS): the features
   and their kinds come from the class's `feature_schema`, the reference sample from the
   version's `reference.csv`, the out-of-distribution gate from its `ood.npz` (when it has one).
2. The period's rows of both sources (`data.read_current`): the API's requests carry the gate's
   verdicts as the API logged them; the batch scores are judged by the champion's gate here.
3. One Evidently report per source with rows (`report.build_report`): its HTML page goes to
   REPORTS_DIR/<period>/<source>.html, its snapshot to the Evidently workspace.
4. The period's metrics replace whatever the period held in `monitoring_metrics` (one
   transaction): a re-run of a period is idempotent.
5. Each crossed threshold is logged as an ERROR and alerted once per period (`alerts.notify`,
   which never raises).

A champion without a reference sample (saved before versions carried one) is not compared: the
job says so in a WARNING, records the volumes and `reference_missing` = 1, and succeeds, so a
schedule keeps running until a new version is trained.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from machine_learning_engineering import ood, registry
from machine_learning_engineering.model import MLEModel, model_class
from machine_learning_engineering.schema import FeatureSchema
from monitoring import NoChampion
from monitoring.alerts import AlertOutcome, Breach, find_breaches, notify
from monitoring.config import MonitorSettings
from monitoring.data import OOD, SOURCES, Current, read_current
from monitoring.metrics import MetricRow, replace_period
from monitoring.period import Period
from monitoring.report import SourceReport, build_report
from monitoring.workspace import add_runs

log = logging.getLogger("monitoring")


@dataclass
class JobResult:
    """What one run found and did."""

    period: Period
    model_version: str
    rows: dict[str, int]
    reference_missing: bool = False
    reports: dict[str, SourceReport] = field(default_factory=dict)
    html: dict[str, Path] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricRow] = field(default_factory=list)
    breaches: list[Breach] = field(default_factory=list)
    alerts: list[AlertOutcome] = field(default_factory=list)

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    def summary(self) -> str:
        if self.reference_missing:
            return f"{self.period}: not compared: model version {self.model_version} has no reference sample"
        parts = []
        for source in SOURCES:
            report = self.reports.get(source)
            if report is None:
                parts.append(f"{source} {self.rows.get(source, 0):,} rows")
                continue
            share = report.value("drift_share")
            drifted = f" drifted: {', '.join(report.drifted)}" if report.drifted else ""
            judged = "" if report.judged else " (too few rows to judge)"
            shown = "n/a" if share is None else f"{share:.2f}"
            parts.append(f"{source} {report.rows:,} rows, drift share {shown}{drifted}{judged}")
        verdict = f"{len(self.breaches)} threshold(s) crossed" if self.breaches else "within thresholds"
        return f"{self.period} against {self.model_version}: {'; '.join(parts)}: {verdict}"


def _gate(model_dir: Path, metadata: dict[str, Any], schema: FeatureSchema) -> ood.OODGate | None:
    path = registry.version_file(model_dir, metadata, ood.GATE_FILE)
    return None if path is None else ood.OODGate.load(path, schema)


def judge(gate: ood.OODGate | None, frame: pd.DataFrame, schema: FeatureSchema, what: str) -> np.ndarray[Any, Any]:
    """1.0 / 0.0 per row (out of / in distribution), NaN for all when there is no gate or the rows
    cannot be validated against the schema (then a WARNING says why)."""
    nothing = np.full(len(frame), np.nan)
    if gate is None or frame.empty:
        return nothing
    try:
        verdicts = gate.check_frame(schema.validate(frame))
    except Exception as exc:  # a feature_store the schema refuses: the drift still shows it
        log.warning("%s: the gate cannot judge these rows (%s); no OOD rate for them", what, exc)
        return nothing
    return np.array([np.nan if v.in_distribution is None else float(not v.in_distribution) for v in verdicts])


def _write_html(path: Path, html: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def html_path(reports_dir: Path, period: Period, source: str) -> Path:
    return reports_dir / period.key / f"{source}.html"


def run_report(settings: MonitorSettings, period: Period) -> JobResult:
    """Compare the period's rows with the champion's reference; see the module."""
    model_dir, spec = settings.registry.model_dir, settings.registry.model_class
    version = registry.champion(model_dir)
    if version is None:
        raise NoChampion(f"no champion in {model_dir}: train and promote a model first (companydata-train)")
    cls: type[MLEModel] = model_class(spec)
    schema = cls.feature_schema
    metadata = registry.read_metadata(model_dir, version)
    reference = cls.load_reference(model_dir, version)
    current: dict[str, Current] = read_current(settings.database, period, schema)
    rows = {source: current[source].rows for source in SOURCES}
    result = JobResult(period, version, rows)

    base = [MetricRow(source, "rows", "", float(rows[source])) for source in SOURCES]
    base.append(MetricRow("batch", "rows_without_features", "", float(current["batch"].without_features)))
    if reference is None:
        log.warning(
            "%s: model version %s has no reference sample (%s; versions trained before references existed have"
            " none): the period is not compared; train a new version (companydata-train) to compare again",
            period,
            version,
            ood.REFERENCE_FILE,
        )
        result.reference_missing = True
        result.metrics = [*base, *(MetricRow(s, "reference_missing", "", 1.0) for s in SOURCES)]
        replace_period(settings.database, period, version, result.metrics)
        return result

    gate = _gate(model_dir, metadata, schema)
    reference = reference.copy()
    reference[OOD] = judge(gate, reference, schema, f"{version}'s reference")
    batch = current["batch"].frame
    # The verdicts the scoring recorded stand; the gate judges only rows scored without one
    # (days scored before batch_predictions kept verdicts), on today's feature_store.
    unjudged = batch[OOD].isna().to_numpy()  # data.read_current always fills the column
    if unjudged.any():
        batch.loc[unjudged, OOD] = judge(gate, batch[unjudged], schema, f"{period}'s batch scores")

    timestamp = datetime.combine(period.since, time())  # naive UTC: Evidently's UI plots runs by it
    for source in SOURCES:
        frame = current[source].frame
        if frame.empty:
            log.info("%s: no %s in the period", period, source)
            continue
        result.reports[source] = build_report(
            reference,
            frame,
            schema,
            settings.thresholds,
            source=source,
            timestamp=timestamp,
            metadata={
                "period": period.key,
                "since": period.since.isoformat(),
                "until": period.until.isoformat(),
                "source": source,
                "model_version": version,
            },
            champion=version,
        )
        if not result.reports[source].judged:
            log.warning(
                "%s: only %d %s (MONITOR_MIN_ROWS=%d): reported, not judged",
                period,
                rows[source],
                source,
                settings.thresholds.min_rows,
            )

    for source, report in result.reports.items():
        path = html_path(settings.reports_dir, period, source)
        _write_html(path, report.html)
        result.html[source] = path
    if result.reports:
        snapshots = {source: report.snapshot for source, report in result.reports.items()}
        result.runs = add_runs(settings.workspace, period, schema.names, snapshots)

    result.metrics = base + [
        MetricRow(source, metric, feature, value)
        for source, report in result.reports.items()
        for (metric, feature), value in sorted(report.metrics.items())
        if metric != "rows"
    ]
    replaced = replace_period(settings.database, period, version, result.metrics)
    log.info("%s: %d metrics written (%d replaced)", period, len(result.metrics), replaced)

    result.breaches = find_breaches(result.reports, settings.thresholds)
    for breach in result.breaches:
        log.error("drift alert: %s", breach.message(period))
    if result.breaches:
        links = {source: str(path) for source, path in result.html.items()}
        result.alerts = notify(settings.database, settings.alerts, period, version, result.breaches, links)
    log.info("%s", result.summary())
    return result
