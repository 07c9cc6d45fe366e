"""The stack's Dagster instance (deploy/dagster.yaml) on the real PostgreSQL: runs and events in
the `dagster` database, as the `dagster` login, through one pooled connection per storage rather
than a connection per statement."""

# No `from __future__ import annotations`: Dagster reads the asset's return annotation.

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    DagsterInstance,
    MaterializeResult,
    asset,
    execute_job,
    materialize,
)
from dagster._core.definitions.reconstruct import ReconstructableRepository
from sqlalchemy import event

from machine_learning_engineering.db import connect_once
from orchestration.storage import (
    PooledPostgresEventLogStorage,
    PooledPostgresRunStorage,
    PooledPostgresScheduleStorage,
)
from testkit import dagster_home
from testkit.fixtures import TestDatabase

CHECKS = 20


@pytest.fixture
def instance(companydata: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    """The deployed dagster.yaml on the test cluster's `dagster` database."""
    for name, value in dagster_home.prepare(tmp_path / "dagster_home", companydata.cluster).items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.get() as instance:
        yield instance


@asset(check_specs=[AssetCheckSpec(f"check_{i}", asset="toy") for i in range(CHECKS)])
def toy() -> Iterator[MaterializeResult[None]]:
    yield MaterializeResult(
        check_results=[AssetCheckResult(check_name=f"check_{i}", passed=True) for i in range(CHECKS)]
    )


def test_the_deployed_instance_uses_the_pooled_storages(instance: DagsterInstance) -> None:
    assert isinstance(instance.run_storage, PooledPostgresRunStorage)
    assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PooledPostgresScheduleStorage)


def test_a_run_is_recorded_in_the_dagster_database_over_a_few_connections(
    instance: DagsterInstance, companydata: TestDatabase
) -> None:
    connections = 0

    def count(*_: object) -> None:
        nonlocal connections
        connections += 1

    pooled = (PooledPostgresRunStorage, PooledPostgresEventLogStorage, PooledPostgresScheduleStorage)
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        assert isinstance(storage, pooled)
        event.listen(storage._engine, "connect", count)

    result = materialize([toy], instance=instance)

    assert result.success
    records = instance.get_records_for_run(result.run_id, limit=10_000).records
    assert len(records) > 3 * CHECKS  # planned, yielded and evaluated, per check
    # dagster-postgres alone opens a connection per statement: several per event.
    assert connections <= 10, f"{connections} new connections for {len(records)} events"
    conn = connect_once(companydata.settings("dagster").model_copy(update={"name": "dagster"}))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user, count(*) FROM event_logs WHERE run_id = %s", (result.run_id,))
            assert cur.fetchall() == [("dagster", len(records))]
    finally:
        conn.close()


def test_the_stack_jobs_run_with_the_multiprocess_executor_on_the_deployed_instance(
    stack: TestDatabase, instance: DagsterInstance, raw_dir: Path
) -> None:
    """As the daemon runs them: the definitions rebuilt from their module in each step's own
    process (the executor `defs` declares), recorded in the `dagster` database."""
    job = ReconstructableRepository.for_module("orchestration.definitions", "defs").get_reconstructable_job(
        "customer_etl_job"
    )
    with execute_job(job, instance=instance) as result:
        assert result.success
        starts = result.filter_events(lambda e: e.event_type_value == "STEP_START")
        assert {e.step_key for e in starts} == {"customer_tables", "feature_store"}
        assert all(e.pid is not None and e.pid != os.getpid() for e in starts)
        assert len({e.pid for e in starts}) == 2  # one process per step
    loaded = stack.query("SELECT (SELECT count(*) FROM labels), (SELECT count(*) FROM feature_store)")
    clients = len((raw_dir / "labels.csv").read_text().splitlines()) - 1
    assert clients > 0 and loaded == [(clients, clients)]
