"""Dagster's PostgreSQL storages, each holding one pooled connection per process.

dagster-postgres opens a new connection for every statement it runs (SQLAlchemy's NullPool, so
that no idle connections pile up per DagsterInstance). A run records several hundred events
(each asset, partition and data check is planned, yielded and evaluated) and every event is a
few statements: with password authentication each new connection costs ~6 ms here, which was
more than half of Dagster's overhead on the whole graph (bench/bench_orchestration.py).

These classes are dagster-postgres's own, configured as dagster-webserver configures them for
itself (`optimize_for_webserver`: a pool of one connection, recycled hourly, a few overflow
connections for threads), with no statement timeout: a run may wait on a lock. dagster.yaml
names them (`run_storage`, `event_log_storage`, `schedule_storage`) with the same `postgres_db`
settings as dagster-postgres's `storage: postgres`. Every Dagster process (webserver, daemon,
run and step workers) thus holds at most a handful of connections to the `dagster` database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Connections recycled after an hour; up to this many more than the pooled one under threads
# (the daemon's sensor, scheduler and run-queue threads share one instance).
POOL_RECYCLE_S = 3600
MAX_OVERFLOW = 4
NO_STATEMENT_TIMEOUT = 0


class _PooledStorage(Protocol):
    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = ...,
        inst_data: ConfigurableClassData | None = ...,
        token_provider: Any = ...,
    ) -> None: ...

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None: ...


S = TypeVar("S", bound=_PooledStorage)


def pooled(cls: type[S], inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> S:
    """A dagster-postgres storage of class `cls` from its dagster.yaml config, with a pool."""
    storage = cls(
        postgres_url=pg_url_from_config(config_value),
        should_autocreate_tables=config_value.get("should_autocreate_tables", True),
        inst_data=inst_data,
        token_provider=get_token_provider_from_config(config_value),
    )
    storage.optimize_for_webserver(NO_STATEMENT_TIMEOUT, POOL_RECYCLE_S, MAX_OVERFLOW)
    return storage


class PooledPostgresRunStorage(PostgresRunStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresRunStorage:
        return pooled(cls, inst_data, config_value)


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresEventLogStorage:
        return pooled(cls, inst_data, config_value)


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresScheduleStorage:
        return pooled(cls, inst_data, config_value)
