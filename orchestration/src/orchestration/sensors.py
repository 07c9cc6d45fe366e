"""`retrain_on_new_features`: an asset sensor on `feature_store` that requests a training run
(`training_job`) for each new feature_store materialization that was published.

An asset sensor rather than an AutomationCondition: it reacts to the event itself, can skip
the materializations whose data checks failed (metadata "published": False: the table was
not replaced, so there is nothing new to learn from), and its run key (the event's run and
time) makes each change request exactly one run. On by default (RUNNING), like the schedules.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    EventLogEntry,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset_sensor,
)

from orchestration.schedules import training_job


@asset_sensor(
    asset_key=AssetKey("feature_store"),
    job=training_job,
    name="retrain_on_new_features",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Retrain when feature_store was rebuilt and published.",
)
def retrain_on_new_features(context: SensorEvaluationContext, asset_event: EventLogEntry) -> RunRequest | SkipReason:
    materialization = asset_event.asset_materialization
    if materialization is None:
        return SkipReason("not a materialization of feature_store")
    published = materialization.metadata.get("published")
    if published is not None and published.value is False:
        return SkipReason(f"feature_store was not published by run {asset_event.run_id} (a data check failed)")
    return RunRequest(
        run_key=f"feature_store:{asset_event.run_id}:{asset_event.timestamp}",
        tags={"companydata/trigger": "feature_store", "companydata/feature_store_run": asset_event.run_id},
    )
