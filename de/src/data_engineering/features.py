"""feature_store, built in SQL inside the database and swapped in atomically at commit."""

from __future__ import annotations

import time

from psycopg2 import sql

from data_engineering import DataError
from data_engineering.db import EtlCursor, source_table, stage, table_exists, table_sql
from data_engineering.load import StepResult
from machine_learning_engineering.db import fetch_one

SOURCES = ("customer_profiles", "customer_activity", "labels")


def build_features(cur: EtlCursor) -> StepResult:
    """Stage feature_store from the customer tables (those this command staged, if any)."""
    sources = {table: source_table(cur, table) for table in SOURCES}
    missing = [t for t in SOURCES if not table_exists(cur, sources[t])]
    if missing:
        raise DataError(f"table(s) {', '.join(missing)} missing: run load-customers before build-features")
    started = time.perf_counter()
    staged = stage(cur, "feature_store")
    cur.execute(table_sql("feature_store.sql", table=staged, sources=sources))
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(staged)))
    rows: int = fetch_one(cur)[0]
    result = StepResult("build feature_store", rows, time.perf_counter() - started)
    result.log()
    return result
