"""`defs`: the stack's Dagster definitions (workspace: python_module orchestration.definitions,
attribute defs). Assets, their data checks, jobs, schedules, the retraining sensor, the
resources (each stage's settings from the environment) and the executor.

The executor is Dagster's multiprocess executor: each step in its own process on this machine.
docs/orchestration.md shows the change for the docker or Kubernetes executor and run launcher.
"""

from __future__ import annotations

from dagster import Definitions, multiprocess_executor

from orchestration.assets.etl import customer_tables, feature_store, sales
from orchestration.assets.model import model
from orchestration.assets.monitoring import drift_report
from orchestration.assets.scoring import batch_predictions
from orchestration.resources import EtlResource, MonitoringResource, ScoringResource, TrainingResource
from orchestration.schedules import JOBS, SCHEDULES
from orchestration.sensors import retrain_on_new_features

ASSETS = [customer_tables, sales, feature_store, model, batch_predictions, drift_report]


def resources() -> dict[str, object]:
    """Each stage's settings, read from the environment when a step runs."""
    return {
        "etl": EtlResource(),
        "training": TrainingResource(),
        "scoring": ScoringResource(),
        "monitoring": MonitoringResource(),
    }


defs = Definitions(
    assets=ASSETS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=[retrain_on_new_features],
    resources=resources(),
    executor=multiprocess_executor.configured({"max_concurrent": 4}),
)
