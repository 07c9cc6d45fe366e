"""The database bootstrap (de/db/init): roles, and least privilege that holds for later tables."""

from __future__ import annotations

import psycopg2
import pytest

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import available_months, load_customers, load_sales
from machine_learning_engineering.db import connect


@pytest.fixture
def loaded(companydata, raw_dir):
    with etl_transaction(companydata.settings()) as cur:
        load_customers(cur, raw_dir)
        load_sales(cur, raw_dir, available_months(raw_dir))
        build_features(cur)
    return companydata


def run_as(db, role: str, statement: str, read_only_off: bool = False) -> None:
    conn = connect(db.settings(role))
    try:
        with conn, conn.cursor() as cur:
            if read_only_off:  # prove the refusal comes from privileges, not the session default
                cur.execute("SET default_transaction_read_only = off")
                conn.commit()
            cur.execute(statement)
    finally:
        conn.close()


def test_roles_and_membership(companydata) -> None:
    rows = companydata.query(
        "SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.member "
        "JOIN pg_roles m ON m.oid = a.roleid ORDER BY 1"
    )
    assert ("ds_user", "ds_user_role") in rows and ("mle_user", "mle_user_role") in rows
    assert companydata.query("SELECT rolsuper FROM pg_roles WHERE rolname = 'admin'") == [(True,)]


def test_ds_user_reads_every_table_created_by_the_etls(loaded) -> None:
    tables = loaded.tables()
    assert {
        "customer_profiles",
        "customer_activity",
        "labels",
        "stores",
        "sales",
        "monthly_sales",
        "feature_store",
    } <= tables
    for table in tables:
        loaded.query(f"SELECT count(*) FROM {table}", role="ds")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO feature_store VALUES (999999, 1, 'a', 0.5, 1, 0)",
        "UPDATE labels SET label = 1",
        "DELETE FROM sales",
        "TRUNCATE stores",
        "DROP TABLE feature_store",
        "CREATE TABLE scratch (x int)",
        "CREATE TEMPORARY TABLE scratch (x int)",
        "CREATE SCHEMA scratch",
    ],
)
def test_ds_user_cannot_write(loaded, statement) -> None:
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        run_as(loaded, "ds", statement, read_only_off=True)
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        run_as(loaded, "ds", statement)


def test_mle_user_can_write_and_ds_user_reads_what_it_creates(loaded) -> None:
    run_as(loaded, "mle", "INSERT INTO stores VALUES (99, 'Porto')")
    run_as(loaded, "mle", "UPDATE labels SET label = 1 - label WHERE idx = 0")
    run_as(loaded, "mle", "CREATE TABLE mle_scratch AS SELECT 1 AS x")
    assert loaded.query("SELECT x FROM mle_scratch", role="ds") == [(1,)]
    assert loaded.query("SELECT location FROM stores WHERE idx = 99", role="ds") == [("Porto",)]
