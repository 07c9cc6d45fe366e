from __future__ import annotations

import logging
import threading

import psycopg2
import pytest

from machine_learning_engineering.db import TableNotReady, connect, create_engine, wait_for_database, wait_for_table


def test_connect_waits_for_a_server_that_is_still_starting(companydata, caplog) -> None:
    cluster = companydata.cluster
    cluster.stop()
    restarted = threading.Timer(1.5, cluster.start, kwargs={"fast": True})
    restarted.start()
    try:
        with caplog.at_level(logging.WARNING, logger="machine_learning_engineering.db"):
            conn = connect(companydata.settings("mle"), timeout=60)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == ("mle_user",)
        conn.close()
    finally:
        restarted.join()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings and all("not ready" in w for w in warnings)
    assert "attempt 1" in warnings[0] and "retrying in" in warnings[0]


def test_gives_up_after_the_timeout(companydata) -> None:
    settings = companydata.settings().model_copy(update={"port": 1})
    with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
        wait_for_database(settings, timeout=1)


def test_wrong_password_is_not_retried(companydata, caplog) -> None:
    settings = companydata.settings("ds").model_copy(update={"password": "wrong"})
    with caplog.at_level(logging.WARNING), pytest.raises(psycopg2.OperationalError, match="password authentication"):
        connect(settings, timeout=30)
    assert not [r for r in caplog.records if "not ready" in r.getMessage()]


def test_engine_reads_as_the_role(companydata) -> None:
    engine = create_engine(companydata.settings("ds"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_user").scalar() == "ds_user"
    engine.dispose()


def test_wait_for_table_returns_once_the_table_has_rows(companydata, caplog) -> None:
    def create() -> None:
        companydata.query("CREATE TABLE feature_store (idx int)", role="etl")
        threading.Timer(
            1.0, companydata.query, args=("INSERT INTO feature_store VALUES (1)",), kwargs={"role": "etl"}
        ).start()

    threading.Timer(1.0, create).start()
    with caplog.at_level(logging.INFO, logger="machine_learning_engineering.db"):
        wait_for_table(companydata.settings("ds"), "feature_store", timeout=60)
    messages = [r.getMessage() for r in caplog.records]
    assert any("feature_store does not exist yet (check 1)" in m for m in messages)
    assert messages[-1] == "table feature_store is ready"


def test_wait_for_table_times_out_saying_why(companydata) -> None:
    with pytest.raises(TableNotReady, match="table feature_store does not exist yet after waiting 1 s"):
        wait_for_table(companydata.settings("ds"), "feature_store", timeout=1)
    companydata.query("CREATE TABLE feature_store (idx int)", role="etl")
    with pytest.raises(TableNotReady, match="table feature_store exists but is empty after waiting 1 s"):
        wait_for_table(companydata.settings("ds"), "feature_store", timeout=1)
