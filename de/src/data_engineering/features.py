"""feature_store, built in SQL inside the database and swapped in atomically."""

from __future__ import annotations

import time

from psycopg2.extensions import cursor as PgCursor

from data_engineering import DataError
from data_engineering.db import swap_in, table_exists, table_sql
from data_engineering.load import StepResult

SOURCES = ("customer_profiles", "customer_activity", "labels")


def build_features(cur: PgCursor) -> StepResult:
    missing = [t for t in SOURCES if not table_exists(cur, t)]
    if missing:
        raise DataError(f"table(s) {', '.join(missing)} missing: run load-customers before build-features")
    started = time.perf_counter()
    cur.execute("DROP TABLE IF EXISTS feature_store__new")
    cur.execute(table_sql("feature_store.sql", table="feature_store__new"))
    cur.execute("SELECT count(*) FROM feature_store__new")
    rows = cur.fetchone()[0]
    swap_in(cur, "feature_store__new", "feature_store")
    result = StepResult("build feature_store", rows, time.perf_counter() - started)
    result.log()
    return result
