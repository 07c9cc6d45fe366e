"""Jobs and schedules. Every schedule is on by default (DefaultScheduleStatus.RUNNING), so a
fresh Compose stack runs them as soon as the dagster-daemon is up. Times are UTC.

- `monthly_sales_schedule`: on the 1st at 01:00, the previous month's `sales` partition (the
  newest complete month; `build_schedule_from_partitioned_job` picks it);
- `daily_scoring_schedule`: at 04:00, yesterday's `batch_predictions` partition;
- `daily_drift_schedule`: at 05:00, yesterday's `drift_report` partition (after the scoring);
- `weekly_training_schedule`: Mondays at 03:00, a training run (`model`).

The customer tables and feature_store have a job (`customer_etl_job`) for the UI and the CLI;
when they change, `sensors.retrain_on_new_features` requests a training run.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from orchestration.assets.model import MODEL
from orchestration.assets.monitoring import DRIFT_REPORT
from orchestration.assets.scoring import BATCH_PREDICTIONS

RUNNING = DefaultScheduleStatus.RUNNING

customer_etl_job = define_asset_job(
    "customer_etl_job",
    selection=AssetSelection.assets("stores", "customer_profiles", "customer_activity", "labels", "feature_store"),
    description="Reload the customer tables from RAW_DATA_DIR and rebuild feature_store.",
)
sales_job = define_asset_job(
    "sales_job",
    selection=AssetSelection.assets("sales", "monthly_sales"),
    description="Load a month (a partition) of sales; a backfill loads a range of months.",
)
training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.assets(MODEL),
    description="Train a candidate and promote it if it passes the gate.",
)
scoring_job = define_asset_job(
    "scoring_job",
    selection=AssetSelection.assets(BATCH_PREDICTIONS),
    description="Score every client of feature_store with the champion, for a day (a partition).",
)

monitoring_job = define_asset_job(
    "monitoring_job",
    selection=AssetSelection.assets(DRIFT_REPORT),
    description="The drift report of a day (a partition): its predictions and batch scores against the champion's"
    " reference sample.",
)

monthly_sales_schedule = build_schedule_from_partitioned_job(
    sales_job, name="monthly_sales_schedule", day_of_month=1, hour_of_day=1, default_status=RUNNING
)
daily_scoring_schedule = build_schedule_from_partitioned_job(
    scoring_job, name="daily_scoring_schedule", hour_of_day=4, default_status=RUNNING
)
daily_drift_schedule = build_schedule_from_partitioned_job(
    monitoring_job, name="daily_drift_schedule", hour_of_day=5, default_status=RUNNING
)
weekly_training_schedule = ScheduleDefinition(
    name="weekly_training_schedule",
    job=training_job,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    default_status=RUNNING,
)

JOBS = [customer_etl_job, sales_job, training_job, scoring_job, monitoring_job]
SCHEDULES = [monthly_sales_schedule, daily_scoring_schedule, daily_drift_schedule, weekly_training_schedule]
