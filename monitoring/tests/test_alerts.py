"""Alerts: the webhook POST with its timeout and retries (against a real local HTTP receiver), and
exactly one alert per crossed threshold per period, recorded in the database."""

from __future__ import annotations

import time
from datetime import date

import pytest

from monitoring.alerts import AlertOutcome, Breach, DeliveryError, lease_seconds, notify, payload, post_json
from monitoring.config import AlertSettings
from monitoring.period import Period
from testkit.fixtures import TestDatabase
from testkit.localdb import free_port

from .conftest import Receiver

PERIOD = Period.day(date(2026, 3, 4))
DRIFT = Breach("drift_share", 0.5, 0.5, {"requests": {"value": 0.5, "features": ["scd_a", "attr_b"]}})
OOD = Breach("ood_rate", 0.2, 0.05, {"batch": {"value": 0.2, "rows": 3000}})


def settings(url: str | None, **overrides: float) -> AlertSettings:
    return AlertSettings(
        webhook_url=url, **{"timeout_seconds": 2.0, "retries": 3, "backoff_seconds": 0.01, **overrides}
    )


def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"  # a port nothing listens on


def test_the_payload_names_the_threshold_the_period_and_the_features() -> None:
    body = payload(DRIFT, PERIOD, "20260301T000000.000000Z", {"requests": "/srv/reports/html/2026-03-04/requests.html"})
    assert body["alert_id"] == "companydata-drift:2026-03-04:drift_share"
    assert body["period"] == {"since": "2026-03-04", "until": "2026-03-04"}
    assert body["variable"] == "MONITOR_DRIFT_SHARE" and body["value"] == 0.5 and body["limit"] == 0.5
    assert body["sources"]["requests"]["features"] == ["scd_a", "attr_b"]
    assert "scd_a, attr_b" in body["message"] and body["model_version"] == "20260301T000000.000000Z"


def test_server_errors_are_retried_until_the_webhook_takes_the_alert(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 429]
    assert post_json(settings(receiver.url), {"hello": 1}) == 4
    assert receiver.received(1) == [{"hello": 1}] and receiver.attempts == 4


def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [404]
    with pytest.raises(DeliveryError, match="HTTP 404") as failed:
        post_json(settings(receiver.url), {"hello": 1})
    assert not failed.value.transient and receiver.attempts == 1 and receiver.bodies == []


def test_a_slow_webhook_times_out_and_is_retried(receiver: Receiver) -> None:
    receiver.delay = 1.0
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="timed out") as failed:
        post_json(settings(receiver.url, timeout_seconds=0.2, retries=2), {"hello": 1})
    assert failed.value.transient and receiver.attempts == 3
    assert time.monotonic() - started < 3 * 1.0 + 2  # bounded by the timeouts, not by the slow server


def test_an_unreachable_webhook_gives_up_after_the_retries() -> None:
    with pytest.raises(DeliveryError, match=r"Connection refused|URLError") as failed:
        post_json(settings(nowhere(), retries=2), {"hello": 1})
    assert failed.value.transient


def test_the_lease_outlasts_a_delivery() -> None:
    s = settings("http://127.0.0.1:1/", timeout_seconds=5, retries=3, backoff_seconds=1)
    assert lease_seconds(s) > 4 * 5 + 1 + 2 + 4


def rows(db: TestDatabase) -> list[tuple]:
    return db.query(
        "SELECT threshold, attempts, delivered_at IS NOT NULL, last_error FROM monitoring_alerts ORDER BY threshold"
    )


def test_each_threshold_is_alerted_once_per_period_however_often_it_runs(
    companydata: TestDatabase, receiver: Receiver
) -> None:
    monitor = companydata.settings("monitor")
    first = notify(monitor, settings(receiver.url), PERIOD, "v1", [DRIFT, OOD])
    assert [(o.threshold, o.new, o.state) for o in first] == [("drift_share", True, "sent"), ("ood_rate", True, "sent")]
    again = notify(monitor, settings(receiver.url), PERIOD, "v1", [DRIFT, OOD])
    assert [(o.new, o.state) for o in again] == [(False, "already sent")] * 2
    bodies = receiver.received(2)
    assert sorted(b["threshold"] for b in bodies) == ["drift_share", "ood_rate"] and receiver.attempts == 2
    assert rows(companydata) == [("drift_share", 1, True, None), ("ood_rate", 1, True, None)]
    # Another period is another alert.
    notify(monitor, settings(receiver.url), Period.day(date(2026, 3, 5)), "v1", [DRIFT])
    assert len(receiver.received(3)) == 3


def test_a_failed_delivery_never_raises_and_the_next_run_delivers_it(
    companydata: TestDatabase, receiver: Receiver
) -> None:
    monitor = companydata.settings("monitor")
    receiver.statuses = [500] * 3
    [failed] = notify(monitor, settings(receiver.url, retries=2), PERIOD, "v1", [DRIFT])
    assert failed == AlertOutcome("drift_share", True, "failed", "HTTP 500")
    assert rows(companydata) == [("drift_share", 1, False, "HTTP 500")] and receiver.bodies == []
    [sent] = notify(monitor, settings(receiver.url, retries=2), PERIOD, "v1", [DRIFT])
    assert (sent.new, sent.state) == (False, "sent")
    assert len(receiver.received(1)) == 1 and rows(companydata) == [("drift_share", 2, True, None)]


def test_without_a_webhook_the_alert_is_recorded_and_sent_once_one_is_set(
    companydata: TestDatabase, receiver: Receiver
) -> None:
    monitor = companydata.settings("monitor")
    [recorded] = notify(monitor, settings(None), PERIOD, "v1", [DRIFT])
    assert recorded.state == "recorded" and rows(companydata) == [("drift_share", 0, False, None)]
    notify(monitor, settings(receiver.url), PERIOD, "v1", [DRIFT])
    notify(monitor, settings(receiver.url), PERIOD, "v1", [DRIFT])
    assert len(receiver.received(1)) == 1 and receiver.attempts == 1


def test_a_delivery_in_progress_elsewhere_is_not_sent_twice(companydata: TestDatabase, receiver: Receiver) -> None:
    monitor = companydata.settings("monitor")
    notify(monitor, settings(None), PERIOD, "v1", [DRIFT])
    companydata.query("UPDATE monitoring_alerts SET claimed_at = now()")  # another run holds the claim
    [held] = notify(monitor, settings(receiver.url), PERIOD, "v1", [DRIFT])
    assert held.state == "in delivery elsewhere" and receiver.attempts == 0
    companydata.query("UPDATE monitoring_alerts SET claimed_at = now() - interval '1 day'")  # that run died
    [sent] = notify(monitor, settings(receiver.url), PERIOD, "v1", [DRIFT])
    assert sent.state == "sent" and len(receiver.received(1)) == 1


def test_a_database_that_is_away_never_raises_into_the_job(companydata: TestDatabase, receiver: Receiver) -> None:
    away = companydata.settings("monitor").model_copy(update={"port": free_port(), "connect_timeout": 0.5})
    [outcome] = notify(away, settings(receiver.url), PERIOD, "v1", [DRIFT])
    assert outcome.state == "error" and receiver.attempts == 0
