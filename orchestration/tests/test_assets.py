"""The whole asset graph, materialized in-process against a real PostgreSQL bootstrapped like
the stack: the same tables as `companydata-etl etl`, data checks that refuse bad input and
block everything downstream, idempotent monthly backfills, and batch scores."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, materialize

from data_engineering.cli import main as etl_cli
from machine_learning_engineering import registry
from orchestration.definitions import ASSETS
from testkit.fixtures import TestDatabase

from .conftest import MONTHS

DATA_TABLES = ("stores", "customer_profiles", "customer_activity", "labels", "sales", "monthly_sales", "feature_store")
CUSTOMER = ["stores", "customer_profiles", "customer_activity", "labels"]
DAY = "2026-03-04"


def run(
    resources: dict[str, object],
    keys: list[str],
    instance: DagsterInstance | None = None,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    return materialize(
        ASSETS,
        selection=[AssetKey(k) for k in keys],
        resources=resources,
        instance=instance,
        partition_key=partition_key,
        tags=tags,
        raise_on_error=raise_on_error,
    )


def materialize_everything(resources: dict[str, object], instance: DagsterInstance) -> None:
    run(resources, [*CUSTOMER, "feature_store"], instance)
    for month in MONTHS:
        run(resources, ["sales", "monthly_sales"], instance, partition_key=month)
    run(resources, ["model"], instance)
    run(resources, ["batch_predictions"], instance, partition_key=DAY)


def digests(db: TestDatabase) -> dict[str, str]:
    return {table: db.digest(table) for table in DATA_TABLES if table in db.tables()}


def materialized(result: ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events() if e.asset_key}


def scores(db: TestDatabase) -> list[tuple]:
    return db.query(
        "SELECT partition_date, client_idx, label, probability, model_version FROM batch_predictions"
        " ORDER BY partition_date, client_idx"
    )


def test_the_graph_publishes_what_the_cli_publishes_and_scores_every_client(
    stack: TestDatabase, resources, raw_dir: Path, model_dir: Path
) -> None:
    instance = DagsterInstance.ephemeral()
    materialize_everything(resources, instance)
    by_dagster = digests(stack)
    assert set(by_dagster) == set(DATA_TABLES)

    # The model: a version, its AUC and whether it was promoted, in the materialization.
    model = instance.get_latest_materialization_event(AssetKey("model"))
    assert model is not None and model.asset_materialization is not None
    meta = {k: v.value for k, v in model.asset_materialization.metadata.items()}
    champion = registry.champion(model_dir)
    assert meta["version"] == champion and meta["promoted"] is True and 0.5 < meta["roc_auc"] <= 1.0

    # Every client scored by the champion, once; a re-run of the day gives the same rows.
    clients = stack.query("SELECT count(*) FROM feature_store")[0][0]
    first = scores(stack)
    assert len(first) == clients and {r[4] for r in first} == {champion}
    assert {r[0].isoformat() for r in first} == {DAY}
    run(resources, ["batch_predictions"], instance, partition_key=DAY)
    assert scores(stack) == first
    run(resources, ["batch_predictions"], instance, partition_key="2026-03-05")
    assert len(scores(stack)) == 2 * clients

    # The plain CLI, on the same files, into an empty database: the same tables.
    stack.reset()
    assert etl_cli(["--raw-dir", str(raw_dir), "etl"]) == 0
    assert digests(stack) == by_dagster


@pytest.mark.parametrize("bad_input", ["header_only_profiles", "labels_cut_short"])
def test_a_failed_blocking_check_publishes_nothing_and_blocks_downstream(
    stack: TestDatabase, resources, raw_dir: Path, model_dir: Path, bad_input: str
) -> None:
    instance = DagsterInstance.ephemeral()
    run(resources, [*CUSTOMER, "feature_store"], instance)
    before = digests(stack)
    if bad_input == "header_only_profiles":
        path = raw_dir / "customer_profiles.csv"
        path.write_text(path.read_text().splitlines()[0] + "\n")
        table, check = "customer_profiles", "not_empty"
    else:
        path = raw_dir / "labels.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
        table, check = "labels", "row_count_drop"

    result = run(resources, [*CUSTOMER, "feature_store", "model"], instance, raise_on_error=False)

    assert not result.success
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    failed = evaluations[(table, check)]
    assert not failed.passed and failed.severity.value == "ERROR"
    # The customer tables report the attempt, unpublished; nothing downstream ran.
    assert materialized(result) == set(CUSTOMER)
    for key in CUSTOMER:
        event = instance.get_latest_materialization_event(AssetKey(key))
        assert event is not None and event.asset_materialization is not None
        assert event.asset_materialization.metadata["published"].value is False
    assert instance.get_latest_materialization_event(AssetKey("model")) is None
    assert digests(stack) == before
    assert not model_dir.exists() or registry.versions(model_dir) == []


def test_a_monthly_backfill_run_twice_gives_identical_tables(stack: TestDatabase, resources) -> None:
    instance = DagsterInstance.ephemeral()
    run(resources, CUSTOMER, instance)
    backfill = {"dagster/asset_partition_range_start": MONTHS[0], "dagster/asset_partition_range_end": MONTHS[-1]}

    run(resources, ["sales", "monthly_sales"], instance, tags=backfill)
    once = {t: stack.digest(t) for t in ("sales", "monthly_sales")}
    assert stack.query("SELECT count(DISTINCT sale_month) FROM sales") == [(3,)]
    run(resources, ["sales", "monthly_sales"], instance, tags=backfill)
    assert {t: stack.digest(t) for t in ("sales", "monthly_sales")} == once
    for month in MONTHS:  # the same months, one partition per run
        run(resources, ["sales", "monthly_sales"], instance, partition_key=month)
    assert {t: stack.digest(t) for t in ("sales", "monthly_sales")} == once
    status = instance.get_status_by_partition(AssetKey("sales"), list(MONTHS), ASSETS[1].partitions_def)
    assert status is not None and all(s.value == "MATERIALIZED" for s in status.values())


def step_events(result: ExecuteInProcessResult) -> list[str]:
    return [e.event_type_value for e in result.all_events if e.step_key]


def test_bad_input_fails_at_once_and_is_not_retried(stack: TestDatabase, resources) -> None:
    instance = DagsterInstance.ephemeral()
    run(resources, CUSTOMER, instance)
    result = run(resources, ["sales", "monthly_sales"], instance, partition_key="2020-06-01", raise_on_error=False)
    assert not result.success
    assert "STEP_UP_FOR_RETRY" not in step_events(result)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "no sales file for 2020-06" in failure.step_failure_data.user_failure_data.description
    assert "sales" not in stack.tables() or stack.query("SELECT count(*) FROM sales") == [(0,)]


def test_a_transient_database_error_is_retried_with_backoff(
    stack: TestDatabase, resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2

    from orchestration.assets import etl

    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return real(*args, **kwargs)

    real = etl.run_checked
    monkeypatch.setattr(etl, "run_checked", flaky)
    result = run(resources, CUSTOMER, DagsterInstance.ephemeral())
    assert result.success and len(calls) == 2
    assert "STEP_UP_FOR_RETRY" in step_events(result)
    assert stack.query("SELECT count(*) > 0 FROM customer_profiles") == [(True,)]
