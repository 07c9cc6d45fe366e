"""`drift_report` materialized in-process after the graph it reads (customer tables, feature_store,
the model, the day's batch scores), against a real PostgreSQL: its check passes on a day like the
training data and fails with severity ERROR on a day whose features moved."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, ExecuteInProcessResult, materialize

from orchestration.definitions import ASSETS
from testkit.fixtures import TestDatabase

CUSTOMER = ["stores", "customer_profiles", "customer_activity", "labels"]
DAY, NEXT_DAY = "2026-03-04", "2026-03-05"


def run(
    resources: dict[str, object], keys: list[str], instance: DagsterInstance, partition_key: str | None = None
) -> ExecuteInProcessResult:
    return materialize(
        ASSETS,
        selection=[AssetKey(k) for k in keys],
        resources=resources,
        instance=instance,
        partition_key=partition_key,
    )


def report(resources: dict[str, object], instance: DagsterInstance, day: str) -> tuple[bool, object, dict]:
    result = run(resources, ["drift_report"], instance, partition_key=day)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    [event] = result.get_asset_materialization_events()
    materialization = event.step_materialization_data.materialization
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    return evaluation.passed, evaluation.severity, metadata


def test_drift_report_passes_on_a_usual_day_and_fails_its_check_on_a_shifted_one(
    stack: TestDatabase, resources: dict[str, object], tmp_path: Path
) -> None:
    instance = DagsterInstance.ephemeral()
    run(resources, [*CUSTOMER, "feature_store"], instance)
    run(resources, ["model"], instance)
    clients = stack.query("SELECT count(*) FROM feature_store")[0][0]

    run(resources, ["batch_predictions"], instance, partition_key=DAY)
    passed, _, metadata = report(resources, instance, DAY)
    assert passed, metadata
    assert metadata["batch_rows"] == clients and metadata["requests_rows"] == 0
    assert metadata["batch_drifted_features"] == "none" and metadata["breached"] == "none"
    assert Path(str(metadata["batch_report"])) == tmp_path / "reports" / "html" / DAY / "batch.html"

    # The ETL publishes moved features (as etl_user, the tables' owner): scd_a up, 40 % of attr_b 'd'.
    stack.query(
        "UPDATE feature_store SET scd_a = least(scd_a + 0.2, 0.999),"
        " attr_b = CASE WHEN idx % 5 < 2 THEN 'd' ELSE attr_b END",
        role="etl",
    )
    run(resources, ["batch_predictions"], instance, partition_key=NEXT_DAY)
    passed, severity, metadata = report(resources, instance, NEXT_DAY)
    assert not passed and severity == AssetCheckSeverity.ERROR
    assert set(str(metadata["batch_drifted_features"]).split(", ")) == {"scd_a", "attr_b"}
    assert "drift_share" in str(metadata["breached"])

    # Both days' metrics are in the table, each day's once.
    days = stack.query(
        "SELECT period_start::text, count(*) FILTER (WHERE metric = 'rows' AND source = 'batch')"
        " FROM monitoring_metrics GROUP BY 1 ORDER BY 1"
    )
    assert days == [(DAY, 1), (NEXT_DAY, 1)]
    assert stack.query("SELECT count(*) FROM monitoring_alerts WHERE period_start = %s", (NEXT_DAY,))[0][0] >= 1
