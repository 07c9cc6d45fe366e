"""pytest fixtures: a real, throwaway PostgreSQL bootstrapped from mle/src/machine_learning_engineering/bootstrap.

One cluster per test session (initdb takes seconds); each test gets the database back in its
bootstrapped state: tables the test created are dropped, bootstrap tables emptied.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from data_engineering.generate import GeneratorConfig, generate
from machine_learning_engineering.config import DatabaseSettings, Role
from machine_learning_engineering.db import connect
from testkit import localdb


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll for an event with a deadline: tests synchronise on what happens, never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def generated_dataset(factory: pytest.TempPathFactory, config: GeneratorConfig) -> Path:
    """Raw files from the generator, once per session (the packages' `small_dataset` fixtures)."""
    out = factory.mktemp("small") / "raw"
    generate(out, config)
    return out


def editable_copy(dataset: Path, tmp_path: Path) -> Path:
    """A private copy of a generated dataset that a test may damage (the `raw_dir` fixtures)."""
    return Path(shutil.copytree(dataset, tmp_path / "raw"))


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip())
    return path


def append_line(path: Path, line: str) -> int:
    """Append a data line and return its line number (the header is line 1)."""
    with path.open("a") as f:
        f.write(line + "\n")
    return len(path.read_text().splitlines())


@dataclass
class TestDatabase:
    """Handle on the test database: settings per role, an environment, quick queries."""

    __test__ = False  # not a test class, whatever its name says

    cluster: localdb.LocalCluster
    bootstrap_tables: frozenset[str]
    bootstrap_schemas: frozenset[str] = frozenset()

    def settings(self, role: Role = "admin") -> DatabaseSettings:
        """Connection settings for `role`: "etl" to run ETL stages (as production does), the
        default superuser "admin" only to set up, inspect and tear down."""
        return self.cluster.settings(role)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess that should use this database."""
        env = {k: v for k, v in os.environ.items() if not k.endswith("_DB_PASSWORD")}
        return {
            **env,
            "DB_HOSTNAME": "127.0.0.1",
            "DB_PORT": str(self.cluster.port),
            "DB_NAME": localdb.DATABASE,
            **extra,
        }

    def query(self, sql: str, params: Any = None, role: Role = "admin") -> list[tuple[Any, ...]]:
        conn = connect(self.settings(role))
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def tables(self) -> set[str]:
        return {r[0] for r in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def created_tables(self) -> set[str]:
        """Tables beyond those the bootstrap creates."""
        return self.tables() - self.bootstrap_tables

    def digest(self, table: str) -> str:
        """A checksum of a table's full contents, independent of physical row order."""
        digest: str = self.query(
            "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            f' FROM "{table}" AS t'
        )[0][0]
        return digest

    def schemas(self) -> set[str]:
        return {r[0] for r in self.query("SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_'")}

    def reset(self) -> None:
        """Back to the bootstrapped state: the ETL's tables (owned by etl_user) and any schema
        a test made are dropped, bootstrap tables emptied."""
        for schema in self.schemas() - self.bootstrap_schemas if self.bootstrap_schemas else ():
            self.query(f'DROP SCHEMA "{schema}" CASCADE')
        for table in self.tables() - self.bootstrap_tables:
            self.query(f'DROP TABLE "{table}" CASCADE')
        for table in self.bootstrap_tables:
            self.query(f'TRUNCATE "{table}" CASCADE')


@pytest.fixture(scope="session")
def companydata_cluster() -> Iterator[TestDatabase]:
    with localdb.temporary_cluster(fast=True) as cluster:
        db = TestDatabase(cluster, frozenset())
        db.bootstrap_tables, db.bootstrap_schemas = frozenset(db.tables()), frozenset(db.schemas())
        yield db


@pytest.fixture
def companydata(companydata_cluster: TestDatabase) -> TestDatabase:
    """The bootstrapped `companydata` database, clean for this test."""
    if not companydata_cluster.cluster.running():
        companydata_cluster.cluster.start(fast=True)
    companydata_cluster.reset()
    return companydata_cluster


@pytest.fixture(scope="session")
def feature_frame(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """feature_store-shaped rows (6,000 clients) from the generator, without a database."""
    raw = tmp_path_factory.mktemp("features") / "raw"
    generate(raw, GeneratorConfig(customers=6_000, months=1, seed=3))
    profiles = pd.read_csv(raw / "customer_profiles.csv")
    activity = pd.read_csv(raw / "customer_activity.csv")
    current = activity[activity["valid_to"].isna()][["idx", "scd_a", "scd_b"]]
    frame = profiles.merge(current, on="idx").merge(pd.read_csv(raw / "labels.csv"), on="idx")
    return frame[["idx", "attr_a", "attr_b", "scd_a", "scd_b", "label"]]
