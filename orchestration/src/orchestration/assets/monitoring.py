"""`drift_report`: a day's drift report (the `monitoring` package), one partition per day, after
the day's batch scores.

The asset runs `monitoring.job.run_report` for the partition's day, as `companydata-monitor report
--since DAY --until DAY` does: the champion's reference sample against the day's API predictions
and batch scores, as monitor_user; the day's rows of `monitoring_metrics` replaced (a re-run is
idempotent), the HTML reports in REPORTS_DIR, a run per source in the Evidently workspace, one
alert per crossed threshold. Its check `within_thresholds` fails with severity ERROR when a
threshold is crossed, and with WARN when the champion has no reference sample (the day is not
compared). The check is not blocking: the report is the product either way, and nothing runs
downstream of it."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from monitoring.period import Period
from orchestration.assets.scoring import BATCH_PREDICTIONS, DAILY
from orchestration.resources import DB_RETRY, MonitoringResource, transient_only

if TYPE_CHECKING:
    from monitoring.job import JobResult

DRIFT_REPORT = AssetKey("drift_report")
WITHIN_THRESHOLDS = "within_thresholds"


def _metadata(result: "JobResult") -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "period": result.period.key,
        "model_version": result.model_version,
        "reference_missing": result.reference_missing,
        "breached": ", ".join(b.threshold for b in result.breaches) or "none",
        "metrics_written": len(result.metrics),
    }
    for source, rows in result.rows.items():
        metadata[f"{source}_rows"] = rows
    for source, report in result.reports.items():
        share = report.value("drift_share")
        if share is not None:
            metadata[f"{source}_drift_share"] = share
        metadata[f"{source}_drifted_features"] = ", ".join(report.drifted) or "none"
        metadata[f"{source}_judged"] = report.judged
        ood = report.value("ood_rate")
        if ood is not None:
            metadata[f"{source}_ood_rate"] = ood
    for source, path in result.html.items():
        metadata[f"{source}_report"] = MetadataValue.path(str(path))
    for outcome in result.alerts:
        metadata[f"alert_{outcome.threshold}"] = outcome.state
    return metadata


def check_result(result: "JobResult") -> AssetCheckResult:
    """Failed (ERROR) when a threshold was crossed; failed (WARN) when the day was not compared."""
    if result.reference_missing:
        return AssetCheckResult(
            check_name=WITHIN_THRESHOLDS,
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"not compared: model version {result.model_version} has no reference sample",
        )
    return AssetCheckResult(
        check_name=WITHIN_THRESHOLDS,
        passed=not result.breached,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(b.message(result.period) for b in result.breaches) or "within thresholds",
        metadata={
            b.threshold: MetadataValue.json({"value": b.value, "limit": b.limit, "sources": b.sources})
            for b in result.breaches
        },
    )


@asset(
    key=DRIFT_REPORT,
    deps=[BATCH_PREDICTIONS],
    partitions_def=DAILY,
    group_name="monitoring",
    retry_policy=DB_RETRY,
    check_specs=[
        AssetCheckSpec(
            WITHIN_THRESHOLDS,
            asset=DRIFT_REPORT,
            blocking=False,
            description="The day's drift share, out-of-distribution rate and missing rates within MONITOR_*"
            " (severity ERROR when one is crossed; WARN when the champion has no reference sample).",
        )
    ],
    description="The day's API predictions and batch scores against the champion's reference sample (Evidently):"
    " metrics in monitoring_metrics, HTML in REPORTS_DIR, runs in MONITORING_WORKSPACE, alerts.",
)
def drift_report(context: AssetExecutionContext, monitoring: MonitoringResource) -> Iterator[MaterializeResult[None]]:
    # Evidently takes seconds to import: only the step that reports loads it, not the definitions.
    from monitoring.job import run_report

    day = date.fromisoformat(context.partition_key)
    with transient_only():
        result = run_report(monitoring.settings(), Period.day(day))
    for breach in result.breaches:
        context.log.error("drift alert: %s", breach.message(result.period))
    if result.reference_missing:
        context.log.warning("%s", result.summary())
    else:
        context.log.info("%s", result.summary())
    yield MaterializeResult(metadata=_metadata(result), check_results=[check_result(result)])
