"""Thresholds and alerts: which thresholds a period crossed, and one webhook call per crossed
threshold per period, however often the period is re-run.

A period crosses a threshold when, in a source with at least MONITOR_MIN_ROWS rows:

- `drift_share`: the share of drifted features is at least MONITOR_DRIFT_SHARE;
- `ood_rate`: more than MONITOR_MAX_OOD_RATE of the rows the gate judged are out of
  distribution (and the gate judged at least MONITOR_MIN_ROWS of them);
- `missing_rate`: a feature is missing in more than its reference share plus
  MONITOR_MAX_MISSING_INCREASE.

Each crossed threshold is one `Breach` (naming the sources and features behind it), logged as an
ERROR by the job, recorded in `monitoring_alerts` under the key (period, threshold) and, when
ALERT_WEBHOOK_URL is set, POSTed there as JSON. The key makes it once: a re-run of the period
records nothing new and sends nothing already delivered. Delivery has a timeout per attempt and
retries with exponential backoff on network errors, timeouts and 5xx/408/429 answers; when every
attempt fails the alert stays undelivered (the next run of the period tries again) and the error
is logged. Nothing here raises into the job: `notify` logs and reports what happened instead.
The payload carries `alert_id`, stable per period and threshold, for receivers that deduplicate.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect, first_line
from monitoring.config import AlertSettings, Thresholds
from monitoring.data import query
from monitoring.period import Period
from monitoring.report import SourceReport

log = logging.getLogger(__name__)

THRESHOLDS = ("drift_share", "ood_rate", "missing_rate")
# The variable that sets each threshold (for messages).
VARIABLES = {
    "drift_share": "MONITOR_DRIFT_SHARE",
    "ood_rate": "MONITOR_MAX_OOD_RATE",
    "missing_rate": "MONITOR_MAX_MISSING_INCREASE",
}


@dataclass(frozen=True)
class Breach:
    """A crossed threshold: the worst value over the sources, the limit, and per source its value
    and the features behind it."""

    threshold: str
    value: float
    limit: float
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def message(self, period: Period) -> str:
        parts = []
        for source, found in self.sources.items():
            features = found.get("features")
            named = f" ({', '.join(features)})" if features else ""
            parts.append(f"{source} {found['value']:.3f}{named}")
        what = {
            "drift_share": "share of drifted features",
            "ood_rate": "out-of-distribution rate",
            "missing_rate": "missing rate above the reference's",
        }[self.threshold]
        return (
            f"{period}: {what} {self.value:.3f} crosses {VARIABLES[self.threshold]}={self.limit:g}: {'; '.join(parts)}"
        )


def find_breaches(reports: Mapping[str, SourceReport], thresholds: Thresholds) -> list[Breach]:
    """The thresholds the judged sources crossed, one Breach per threshold."""
    found: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in THRESHOLDS}
    for source, report in reports.items():
        if not report.judged:
            continue
        share = report.value("drift_share")
        if share is not None and share >= thresholds.drift_share:
            found["drift_share"][source] = {"value": share, "features": list(report.drifted)}
        ood, judged_rows = report.value("ood_rate"), report.value("ood_rows") or 0.0
        if ood is not None and judged_rows >= thresholds.min_rows and ood > thresholds.max_ood_rate:
            found["ood_rate"][source] = {"value": ood, "rows": int(judged_rows)}
        increases = {}
        for (metric, feature), rate in report.metrics.items():
            reference = report.value("missing_rate_reference", feature)
            if metric == "missing_rate" and rate is not None and reference is not None:
                increase = rate - reference
                if increase > thresholds.max_missing_increase:
                    increases[feature] = round(increase, 6)
        if increases:
            found["missing_rate"][source] = {
                "value": max(increases.values()),
                "features": sorted(increases, key=lambda f: -increases[f]),
                "increase": increases,
            }
    limits = {
        "drift_share": thresholds.drift_share,
        "ood_rate": thresholds.max_ood_rate,
        "missing_rate": thresholds.max_missing_increase,
    }
    return [
        Breach(t, max(s["value"] for s in sources.values()), limits[t], sources)
        for t, sources in found.items()
        if sources
    ]


def payload(breach: Breach, period: Period, model_version: str, reports: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body of an alert."""
    return {
        "alert_id": f"companydata-drift:{period.key}:{breach.threshold}",
        "source": "companydata-monitor",
        "severity": "error",
        "threshold": breach.threshold,
        "variable": VARIABLES[breach.threshold],
        "value": breach.value,
        "limit": breach.limit,
        "period": {"since": period.since.isoformat(), "until": period.until.isoformat()},
        "model_version": model_version,
        "sources": breach.sources,
        "message": breach.message(period),
        "reports": dict(reports),
    }


class DeliveryError(Exception):
    """The webhook did not take the alert; `transient` when another attempt may succeed."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _post_once(url: str, body: bytes, timeout: float) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "companydata-monitor"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code}", transient=exc.code >= 500 or exc.code in (408, 429)) from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, a garbled answer
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{type(exc).__name__}: {reason}", transient=True) from None


def post_json(settings: AlertSettings, body: Mapping[str, Any]) -> int:
    """POST `body` to the webhook with retries; the attempts it took. Raises DeliveryError when
    every attempt failed (or a 4xx says retrying is useless)."""
    if settings.webhook_url is None:
        raise DeliveryError("ALERT_WEBHOOK_URL is not set", transient=False)
    url, data = settings.webhook_url, json.dumps(body, default=str).encode()

    def warn(state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "alert webhook %s: attempt %d failed (%s); retrying in %.1f s",
            settings.where,
            state.attempt_number,
            exc,
            state.next_action.sleep if state.next_action else 0.0,
        )

    retrying = Retrying(
        stop=stop_after_attempt(settings.retries + 1),
        wait=wait_exponential(multiplier=settings.backoff_seconds, max=60),
        retry=retry_if_exception(lambda exc: isinstance(exc, DeliveryError) and exc.transient),
        before_sleep=warn,
        reraise=True,
    )
    retrying(_post_once, url, data, settings.timeout_seconds)
    attempts: int = retrying.statistics.get("attempt_number", 1)
    return attempts


def lease_seconds(settings: AlertSettings) -> float:
    """How long a claim on an alert holds: longer than every attempt and wait of one delivery."""
    waits = sum(min(settings.backoff_seconds * 2.0**i, 60.0) for i in range(settings.retries))
    return 2 * ((settings.retries + 1) * settings.timeout_seconds + waits) + 60.0


@dataclass(frozen=True)
class AlertOutcome:
    """What became of one breach's alert in this run: `state` is one of recorded (no webhook),
    sent, already sent, in delivery elsewhere, failed, or error (the database)."""

    threshold: str
    new: bool
    state: str
    detail: str = ""


def notify(
    database: DatabaseSettings,
    settings: AlertSettings,
    period: Period,
    model_version: str,
    breaches: Sequence[Breach],
    reports: Mapping[str, str] | None = None,
) -> list[AlertOutcome]:
    """Record each breach once and deliver what is undelivered; never raises."""
    outcomes = []
    for breach in breaches:
        try:
            outcomes.append(_notify_one(database, settings, period, model_version, breach, reports or {}))
        except Exception as exc:  # the database went away, a bug: the report stands regardless
            log.error("alert %s for %s: %s", breach.threshold, period, first_line(exc))
            outcomes.append(AlertOutcome(breach.threshold, False, "error", first_line(exc)))
    return outcomes


def _notify_one(
    database: DatabaseSettings,
    settings: AlertSettings,
    period: Period,
    model_version: str,
    breach: Breach,
    reports: Mapping[str, str],
) -> AlertOutcome:
    key = {"since": period.since, "until": period.until, "threshold": breach.threshold}
    body = payload(breach, period, model_version, reports)
    conn = connect(database)
    try:
        conn.autocommit = True  # each statement commits: a claim must be visible to other runs at once
        with conn.cursor() as cur:
            cur.execute(
                query("record_alert"),
                {
                    **key,
                    "model_version": model_version,
                    "value": breach.value,
                    "limit": breach.limit,
                    "payload": json.dumps(body, default=str),
                },
            )
            new = cur.fetchone() is not None
            if settings.webhook_url is None:
                log.warning("alert %s for %s recorded; not sent: ALERT_WEBHOOK_URL is unset", breach.threshold, period)
                return AlertOutcome(breach.threshold, new, "recorded", "ALERT_WEBHOOK_URL is not set")
            cur.execute(query("claim_alert"), {**key, "lease": lease_seconds(settings)})
            claimed = cur.fetchone()
            if claimed is None:
                cur.execute(
                    "SELECT delivered_at IS NOT NULL FROM monitoring_alerts"
                    " WHERE period_start = %(since)s AND period_end = %(until)s AND threshold = %(threshold)s",
                    key,
                )
                row = cur.fetchone()
                state = "already sent" if row and row[0] else "in delivery elsewhere"
                log.info("alert %s for %s: %s", breach.threshold, period, state)
                return AlertOutcome(breach.threshold, new, state)
            try:
                attempts = post_json(settings, claimed[0])
            except DeliveryError as exc:
                cur.execute(query("alert_failed"), {**key, "error": str(exc)[:500]})
                log.error(
                    "alert %s for %s: the webhook %s did not take it (%s); the next run of the period tries again",
                    breach.threshold,
                    period,
                    settings.where,
                    exc,
                )
                return AlertOutcome(breach.threshold, new, "failed", str(exc))
            cur.execute(query("alert_delivered"), key)
            log.info("alert %s for %s sent to %s (%d attempt(s))", breach.threshold, period, settings.where, attempts)
            return AlertOutcome(breach.threshold, new, "sent", f"{attempts} attempt(s)")
    finally:
        conn.close()
