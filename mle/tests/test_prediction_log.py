from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from machine_learning_engineering.prediction_log import PredictionLogger, PredictionRecord


def records(n: int, start: int = 0) -> list[PredictionRecord]:
    frame = pd.DataFrame({"attr_a": np.arange(n) % 5 + 1, "scd_a": 0.5})
    return PredictionRecord.batch(list(range(start, start + n)), np.zeros(n, int), np.full(n, 0.1), "v1", frame)


def count(db) -> int:
    return db.query("SELECT count(*) FROM predictions")[0][0]


def test_outage_buffers_and_everything_is_written_once_when_the_database_returns(companydata, caplog) -> None:
    logger = PredictionLogger(companydata.settings("mle"), max_backoff=0.5)
    logger.log(records(10))
    assert logger.flush()
    companydata.cluster.stop()
    try:
        with caplog.at_level(logging.WARNING):
            logger.log(records(30, start=10))  # never raises, never blocks on the database
            assert not logger.flush(timeout=1.5)
        stats = logger.stats()
        assert stats["pending"] == 30 and stats["failures"] >= 1 and not stats["database_available"]
        assert any("cannot write" in r.getMessage() for r in caplog.records)
    finally:
        companydata.cluster.start(fast=True)
    assert logger.flush(timeout=30)
    assert logger.stats() | {"failures": 0} == {
        "written": 40,
        "pending": 0,
        "dropped": 0,
        "failures": 0,
        "database_available": True,
    }
    assert companydata.query("SELECT count(*), count(DISTINCT client_idx) FROM predictions") == [(40, 40)]
    logger.close()


def test_a_full_buffer_drops_the_oldest_records_and_counts_them(companydata) -> None:
    logger = PredictionLogger(companydata.settings("mle"), capacity=50, max_backoff=0.5)
    companydata.cluster.stop()
    try:
        logger.log(records(80))
        assert logger.stats()["dropped"] >= 30
    finally:
        companydata.cluster.start(fast=True)
    assert logger.flush(timeout=30)
    kept = [r[0] for r in companydata.query("SELECT client_idx FROM predictions ORDER BY client_idx")]
    assert len(kept) == 80 - logger.stats()["dropped"] and kept[-1] == 79  # the newest survive
    logger.close()


def test_a_retried_record_is_stored_once(companydata) -> None:
    logger = PredictionLogger(companydata.settings("mle"))
    batch = records(5)
    logger.log(batch)
    logger.log(batch)  # the same prediction ids again, as after an ambiguous failure
    assert logger.flush()
    assert count(companydata) == 5
    logger.log(batch[:2] + records(3, start=5))  # written ids beside new ones, in a later batch
    assert logger.flush()
    assert count(companydata) == 8
    assert logger.stats()["failures"] == 0  # the duplicates are not an outage
    logger.close()


def test_rows_hold_valid_uuids_and_json_features_with_null_for_nan(companydata) -> None:
    logger = PredictionLogger(companydata.settings("mle"))
    frame = pd.DataFrame({"attr_a": [1, 2], "attr_b": ["a", 'quote " tab\t'], "scd_a": [0.123456789012345, np.nan]})
    logger.log(PredictionRecord.batch([7, 8], np.array([1, 0]), None, "v2", frame))
    assert logger.flush()
    rows = companydata.query(
        "SELECT client_idx, label, probability, features, substr(prediction_id::text, 15, 1)"
        " FROM predictions ORDER BY client_idx"
    )
    assert rows == [
        (7, 1, None, {"attr_a": 1, "attr_b": "a", "scd_a": 0.123456789012345}, "4"),
        (8, 0, None, {"attr_a": 2, "attr_b": 'quote " tab\t', "scd_a": None}, "4"),
    ]
    logger.close()
