"""The schedules and the retraining sensor request the expected runs for given times and events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    build_schedule_context,
    build_sensor_context,
)

from orchestration.definitions import defs

EXPECTED = {
    "monthly_sales_schedule": "sales_job",
    "daily_scoring_schedule": "scoring_job",
    "daily_drift_schedule": "monitoring_job",
    "weekly_training_schedule": "training_job",
}


def requests(name: str, when: datetime) -> list[RunRequest]:
    schedule = defs.resolve_schedule_def(name)
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=when)
        data = schedule.evaluate_tick(context)
    return list(data.run_requests or [])


def test_every_schedule_and_the_sensor_are_on_by_default() -> None:
    for name, job in EXPECTED.items():
        schedule = defs.resolve_schedule_def(name)
        assert schedule.default_status == DefaultScheduleStatus.RUNNING, name
        assert schedule.job_name == job
    sensor = defs.resolve_sensor_def("retrain_on_new_features")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert [t.job_name for t in sensor.targets] == ["training_job"]


@pytest.mark.parametrize(
    ("when", "month"),
    [
        (datetime(2026, 3, 1, 1, 0, tzinfo=UTC), "2026-02-01"),
        (datetime(2027, 1, 1, 1, 0, tzinfo=UTC), "2026-12-01"),
        (datetime(2020, 2, 1, 1, 0, tzinfo=UTC), "2020-01-01"),  # the first month of the source
    ],
)
def test_on_the_first_the_previous_months_sales_are_loaded(when: datetime, month: str) -> None:
    schedule = defs.resolve_schedule_def("monthly_sales_schedule")
    assert schedule.cron_schedule == "0 1 1 * *"
    [request] = requests("monthly_sales_schedule", when)
    assert request.partition_key == month


def test_every_day_yesterday_is_scored() -> None:
    assert defs.resolve_schedule_def("daily_scoring_schedule").cron_schedule == "0 4 * * *"
    [request] = requests("daily_scoring_schedule", datetime(2026, 3, 5, 4, 0, tzinfo=UTC))
    assert request.partition_key == "2026-03-04"


def test_every_day_after_the_scoring_yesterdays_drift_is_reported() -> None:
    assert defs.resolve_schedule_def("daily_drift_schedule").cron_schedule == "0 5 * * *"
    [request] = requests("daily_drift_schedule", datetime(2026, 3, 5, 5, 0, tzinfo=UTC))
    assert request.partition_key == "2026-03-04"


def test_every_monday_a_model_is_trained() -> None:
    schedule = defs.resolve_schedule_def("weekly_training_schedule")
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.execution_timezone == "UTC"
    [request] = requests("weekly_training_schedule", datetime(2026, 3, 2, 3, 0, tzinfo=UTC))
    assert request.partition_key is None


def evaluate_sensor(instance: DagsterInstance, cursor: str | None = None) -> tuple[list[RunRequest], list[str], str]:
    sensor = defs.resolve_sensor_def("retrain_on_new_features")
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), [data.skip_message] if data.skip_message else [], data.cursor or ""


def test_a_published_feature_store_requests_one_training_run() -> None:
    with DagsterInstance.ephemeral() as instance:
        assert evaluate_sensor(instance)[0] == []  # nothing happened yet
        instance.report_runless_asset_event(AssetMaterialization("feature_store", metadata={"published": True}))
        runs, _, cursor = evaluate_sensor(instance)
        assert len(runs) == 1 and runs[0].tags["companydata/trigger"] == "feature_store"
        assert evaluate_sensor(instance, cursor)[0] == []  # the same change requests no second run
        instance.report_runless_asset_event(AssetMaterialization("feature_store", metadata={"published": True}))
        again, _, _ = evaluate_sensor(instance, cursor)
        assert len(again) == 1 and again[0].run_key != runs[0].run_key


def test_an_unpublished_feature_store_requests_nothing() -> None:
    with DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(AssetMaterialization("feature_store", metadata={"published": False}))
        runs, skipped, _ = evaluate_sensor(instance)
        assert runs == [] and "not published" in skipped[0]
