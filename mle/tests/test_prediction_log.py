from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid

import numpy as np
import pandas as pd
from prometheus_client import REGISTRY

from machine_learning_engineering.ood import Finding, Verdict
from machine_learning_engineering.prediction_log import (
    BatchRecord,
    PredictionLogger,
    PredictionRecord,
    _uuid7_hex,
    batch_copy_binary,
    copy_text,
    features_columns_json,
    features_json,
    loads,
)
from testkit import localdb
from testkit.fixtures import wait_until


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
        "spooled": 0,
        "replayed": 0,
        "dead_lettered": 0,
        "dropped": 0,
        "failures": 0,
        "database_available": True,
    }
    assert companydata.query("SELECT count(*), count(DISTINCT client_idx) FROM predictions") == [(40, 40)]
    logger.close()


def test_a_full_buffer_without_a_spool_drops_the_oldest_records_and_counts_them(companydata) -> None:
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
        (7, 1, None, {"attr_a": 1, "attr_b": "a", "scd_a": 0.123456789012345}, "7"),
        (8, 0, None, {"attr_a": 2, "attr_b": 'quote " tab\t', "scd_a": None}, "7"),
    ]
    logger.close()


# -- nothing lost: dead letters, spool, replay, visible state ---------------------------------


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def poisoned(good: int) -> list[PredictionRecord]:
    """`good` ordinary records around three the database must refuse, each for its own reason."""
    batch = records(good)
    bad_idx = batch[1]._replace(client_idx=10**30)  # bigint out of range
    nul = batch[2]._replace(features='{"attr_b": "a\\u0000b"}')  # jsonb cannot hold NUL
    surrogate = batch[3]._replace(api_key="\ud800")  # not encodable as UTF-8
    return [batch[0], bad_idx, nul, surrogate, *batch[4:]]


def test_records_the_database_refuses_go_to_dead_letters_and_never_block_the_others(companydata, caplog) -> None:
    logger = PredictionLogger(companydata.settings("mle"))
    before = metric("prediction_log_dead_lettered_total")
    with caplog.at_level(logging.ERROR):
        logger.log(poisoned(good=200))
        assert logger.flush(timeout=30)
        logger.log(records(5, start=1000))  # the writer goes on as before
        assert logger.flush(timeout=30)
    assert count(companydata) == 200 - 3 + 5
    stats = logger.stats()
    assert (stats["written"], stats["dead_lettered"], stats["dropped"], stats["failures"]) == (202, 3, 0, 0)
    assert metric("prediction_log_dead_lettered_total") - before == 3
    letters = companydata.query("SELECT record, error FROM prediction_dead_letters ORDER BY id")
    errors = " | ".join(error for _, error in letters)
    assert len(letters) == 3
    assert "out of range for type bigint" in errors and "UntranslatableCharacter" in errors
    assert "UnicodeEncodeError" in errors
    kept = [PredictionRecord.loads(record) for record, _ in letters]
    assert {r.client_idx for r in kept} == {10**30, 2, 3} and any(r.api_key == "\ud800" for r in kept)
    assert sum("prediction_dead_letters" in r.getMessage() for r in caplog.records) == 3
    logger.close()


def test_a_graceful_stop_during_an_outage_spools_and_the_next_start_replays_exactly_once(companydata, tmp_path) -> None:
    spool = tmp_path / "spool"
    first = PredictionLogger(companydata.settings("mle"), spool_dir=spool, max_backoff=0.2)
    first.log(records(10))
    assert first.flush()
    companydata.cluster.stop()
    try:
        first.log(records(25, start=10))  # acknowledged while the database is away
        first.close(timeout=0.5)
        assert first.stats()["spooled"] == 25 and first.stats()["dropped"] == 0
        (spooled,) = spool.glob("*.jsonl")
        assert len(spooled.read_text().splitlines()) == 25
    finally:
        companydata.cluster.start(fast=True)
    # Two processes' loggers start together on the same spool: the file is replayed once.
    second = PredictionLogger(companydata.settings("mle"), spool_dir=spool)
    third = PredictionLogger(companydata.settings("mle"), spool_dir=spool)
    second.start()
    third.start()
    wait_until(lambda: not list(spool.glob("*.jsonl")), what="the spool file to be replayed and removed")
    assert companydata.query("SELECT count(*), count(DISTINCT prediction_id) FROM predictions") == [(35, 35)]
    assert second.stats()["replayed"] + third.stats()["replayed"] == 25
    second.close()
    third.close()


def test_an_interrupted_replay_is_repeated_without_duplicates(companydata, tmp_path) -> None:
    spool = tmp_path / "spool"
    batch = records(30)
    writer = PredictionLogger(companydata.settings("mle"), spool_dir=spool)
    assert writer._spool(batch) is not None  # the file a stopped worker left behind
    writer.log(batch[:12])  # ... some of whose records had landed before it stopped
    assert writer.flush()
    writer.close()
    replayer = PredictionLogger(companydata.settings("mle"), spool_dir=spool)
    replayer.start()
    wait_until(lambda: not list(spool.glob("*.jsonl")), what="the replay")
    assert companydata.query("SELECT count(*), count(DISTINCT prediction_id) FROM predictions") == [(30, 30)]
    replayer.close()


def test_a_full_buffer_spills_to_the_spool_and_nothing_is_lost(companydata, tmp_path) -> None:
    logger = PredictionLogger(companydata.settings("mle"), capacity=50, max_backoff=0.2, spool_dir=tmp_path / "s")
    companydata.cluster.stop()
    try:
        for start in range(0, 200, 20):
            logger.log(records(20, start=start))
        stats = logger.stats()
        # Nothing lost, memory bounded: the buffer holds at most `capacity`, and the writer at
        # most one batch it took from it before the outage showed (how much depends on timing).
        assert stats["dropped"] == 0 and stats["spooled"] + stats["pending"] == 200
        assert stats["pending"] <= 2 * 50 and stats["spooled"] >= 100
    finally:
        companydata.cluster.start(fast=True)
    wait_until(lambda: count(companydata) == 200, what="every spilled record to be replayed")
    assert companydata.query("SELECT count(DISTINCT client_idx) FROM predictions") == [(200,)]
    assert not list((tmp_path / "s").glob("*.jsonl"))
    logger.close()


def test_a_wrong_password_is_visible_at_once_and_an_error_every_period(companydata, caplog) -> None:
    settings = companydata.settings("mle").model_copy(update={"password": "wrong"})
    logger = PredictionLogger(settings, max_backoff=0.05, error_every=0.2, unready_after=0.5)
    with caplog.at_level(logging.ERROR, logger="machine_learning_engineering.prediction_log"):
        logger.start()  # no request needed: the writer probes the database when it starts
        wait_until(lambda: logger.health()["state"] == "degraded", what="a degraded state")
        wait_until(lambda: logger.health()["state"] == "failing", what="the failing state")
        errors = lambda: [r for r in caplog.records if "password authentication failed" in r.getMessage()]  # noqa: E731
        wait_until(lambda: len(errors()) >= 2, what="the error to be repeated")
    health = logger.health()
    assert health["outage_seconds"] >= 0.5 and "password authentication failed" in health["last_error"]
    assert not logger.stats()["database_available"]
    # One ERROR per period, not one per retry (it retries every 0.05 s here).
    assert len(errors()) <= health["outage_seconds"] / 0.2 + 2
    logger.close(timeout=0)


def test_a_login_without_insert_privilege_is_an_outage_not_a_dead_letter(companydata) -> None:
    companydata.query("REVOKE INSERT ON predictions FROM mle_user_role")
    try:
        logger = PredictionLogger(companydata.settings("mle"), max_backoff=0.05, unready_after=0.1)
        logger.start()
        wait_until(lambda: logger.health()["state"] == "failing", what="the probe to see the missing grant")
        assert "may not INSERT" in logger.health()["last_error"]
        logger.log(records(3))
        assert not logger.flush(timeout=0.3)
        assert logger.stats()["dead_lettered"] == 0 and logger.stats()["pending"] == 3
    finally:
        companydata.query("GRANT INSERT ON predictions TO mle_user_role")
    assert logger.flush(timeout=30)
    assert count(companydata) == 3 and logger.health()["state"] == "ok"
    logger.close()


def test_spool_files_written_before_the_gate_columns_replay_unchanged(companydata, tmp_path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    old = [json.dumps(list(record)[:8]) for record in records(5)]  # 8 fields: no verdict yet
    (spool / "1-1-old.jsonl").write_text("\n".join(old) + "\n", encoding="ascii")
    replayer = PredictionLogger(companydata.settings("mle"), spool_dir=spool)
    replayer.start()
    wait_until(lambda: not list(spool.glob("*.jsonl")), what="the old spool file to be replayed")
    assert companydata.query("SELECT count(*), count(in_distribution), count(ood_reasons) FROM predictions") == [
        (5, 0, 0)
    ]
    assert replayer.stats()["replayed"] == 5 and replayer.stats()["dropped"] == 0
    replayer.close()


def test_verdicts_travel_through_the_spool(companydata, tmp_path) -> None:
    frame = pd.DataFrame({"attr_a": [1, 2]})
    verdicts = [Verdict(True), Verdict(False, (Finding(("attr_a",), "attr_a=2 outside [1, 1] seen in training"),))]
    batch = PredictionRecord.batch([1, 2], np.zeros(2, int), None, "v1", frame, None, verdicts)
    writer = PredictionLogger(companydata.settings("mle"), spool_dir=tmp_path)
    assert writer._spool(batch) is not None
    writer.start()
    wait_until(lambda: not list(tmp_path.glob("*.jsonl")), what="the replay")
    assert companydata.query("SELECT client_idx, in_distribution, ood_reasons FROM predictions ORDER BY 1") == [
        (1, True, []),
        (2, False, ["attr_a=2 outside [1, 1] seen in training"]),
    ]
    writer.close()


def apply_bootstrap_file(db, name: str) -> None:
    """A bootstrap file applied by hand, as docs/monitoring.md says (psql: the file may hold meta-commands)."""
    done = subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-U", "admin", "-d", localdb.DATABASE,
         "-f", str(localdb.INIT_DIR / name)],
        env=db.cluster.psql_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_database_made_before_the_gate_columns_holds_the_records_until_70_ood_sql(companydata) -> None:
    """An old database volume never ran 70-ood.sql: the log buffers (an outage, named), nothing
    is dead-lettered or lost, and the records land once the file is applied. Twice is harmless."""
    migration = (localdb.INIT_DIR / "70-ood.sql").read_text()
    companydata.query("DROP VIEW prediction_log")  # older still than 95-prediction-batches.sql's view
    companydata.query("ALTER TABLE predictions DROP COLUMN in_distribution, DROP COLUMN ood_reasons")
    try:
        logger = PredictionLogger(companydata.settings("mle"), max_backoff=0.05, unready_after=0.1)
        logger.start()
        wait_until(lambda: logger.health()["state"] == "failing", what="the probe to see the missing columns")
        assert "in_distribution, ood_reasons" in logger.health()["last_error"]
        assert "70-ood.sql" in logger.health()["last_error"]
        logger.log(records(4))
        assert not logger.flush(timeout=0.3)
        assert logger.stats()["dead_lettered"] == 0 and logger.stats()["pending"] == 4
        companydata.query(migration)
    finally:
        companydata.query(migration)  # idempotent: restores the columns whatever happened
        apply_bootstrap_file(companydata, "95-prediction-batches.sql")  # and the view
    assert logger.flush(timeout=30)
    assert count(companydata) == 4 and logger.health()["state"] == "ok"
    assert companydata.query(
        "SELECT has_column_privilege('mle_user', 'predictions', 'in_distribution', 'INSERT'),"
        " has_column_privilege('mle_user', 'predictions', 'ood_reasons', 'SELECT')"
    ) == [(True, False)]
    logger.close()


# -- cheap records: JSON from columns, COPY text, ids ------------------------------------------


KINDS = {"attr_a": "integer", "attr_b": "category", "scd_a": "number", "scd_b": "integer"}


def test_features_json_writes_validated_columns_as_sent() -> None:
    columns = {
        "attr_a": np.array([1.0, np.nan, -(2.0**31), 1e20]),
        "attr_b": np.array(["c", None, 'quo"te\\ \t\n é', float("nan")], dtype=object),
        "scd_a": np.array([0.1 + 0.2, np.nan, 5.0, -0.0]),
        "scd_b": np.array([3.0, 4.0, np.nan, 0.0]),
    }
    rows = features_json(columns, KINDS)
    assert rows[0] == '{"attr_a":1,"attr_b":"c","scd_a":0.30000000000000004,"scd_b":3}'
    assert [json.loads(row) for row in rows] == [
        {"attr_a": 1, "attr_b": "c", "scd_a": 0.30000000000000004, "scd_b": 3},
        {"attr_a": None, "attr_b": None, "scd_a": None, "scd_b": 4},
        {"attr_a": -(2**31), "attr_b": 'quo"te\\ \t\n é', "scd_a": 5.0, "scd_b": None},
        {"attr_a": 1e20, "attr_b": None, "scd_a": -0.0, "scd_b": 0},
    ]
    assert features_json({name: columns[name][:0] for name in KINDS}, KINDS) == []


def test_odd_text_in_every_field_lands_as_it_was_through_copy(companydata) -> None:
    columns = {"attr_a": np.array([1.0, 2.0]), "attr_b": np.array(["tab\there", "back\\slash\r\nline"], dtype=object),
               "scd_a": np.array([0.5, np.nan]), "scd_b": np.array([np.nan, 1.0])}  # fmt: skip
    verdicts = [Verdict(True), Verdict(False, (Finding(("attr_b",), "attr_b='back\\\\slash' \\N\tnot seen"),))]
    batch = PredictionRecord.from_columns(
        [1, 2], np.array([0, 1]), np.array([0.25, 0.75]), "v\\1\t", columns, KINDS, "key \\N", verdicts
    )
    assert copy_text(batch).count(b"\n") == 2  # one line per record: every line end inside a value is escaped
    logger = PredictionLogger(companydata.settings("mle"))
    logger.log(batch)
    assert logger.flush()
    rows = companydata.query(
        "SELECT client_idx, label, probability, model_version, features, api_key, in_distribution, ood_reasons"
        " FROM predictions ORDER BY client_idx"
    )
    assert rows == [
        (1, 0, 0.25, "v\\1\t", {"attr_a": 1, "attr_b": "tab\there", "scd_a": 0.5, "scd_b": None}, "key \\N", True, []),
        (
            2,
            1,
            0.75,
            "v\\1\t",
            {"attr_a": 2, "attr_b": "back\\slash\r\nline", "scd_a": None, "scd_b": 1},
            "key \\N",
            False,
            ["attr_b='back\\\\slash' \\N\tnot seen"],
        ),
    ]
    assert logger.stats()["dead_lettered"] == 0
    logger.close()


def test_ids_are_time_ordered_uuids_and_a_forked_process_never_repeats_its_parents() -> None:
    before = time.time_ns() // 1_000_000
    ids = [*_uuid7_hex(5000), *_uuid7_hex(1), *_uuid7_hex(3)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(h).version == 7 and uuid.UUID(h).variant == uuid.RFC_4122 for h in ids)
    stamps = [int(h[:12], 16) for h in ids]  # the first 48 bits: Unix time in milliseconds
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
    _uuid7_hex(1)  # the parent holds a block of random bytes now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a gunicorn worker, forked after the parent made ids
        os.write(write, "".join(_uuid7_hex(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    theirs = {text[i : i + 32] for i in range(0, len(text), 32)}
    assert len(theirs) == 100 and not theirs & set(_uuid7_hex(100))


def test_a_batch_meeting_stored_ids_lands_each_once_through_the_staging_table(companydata) -> None:
    logger = PredictionLogger(companydata.settings("mle"))
    first = records(50)
    logger.log(first[:20])
    assert logger.flush()
    logger.log([*first[10:], *records(5, start=100)])  # ten stored ids among new ones: the COPY meets them
    assert logger.flush()
    assert companydata.query("SELECT count(*), count(DISTINCT prediction_id) FROM predictions") == [(55, 55)]
    assert logger.stats()["failures"] == 0 and logger.stats()["dead_lettered"] == 0
    logger.close()


def test_more_records_than_the_buffer_holds_wait_for_the_writer_instead_of_spooling(companydata, tmp_path) -> None:
    logger = PredictionLogger(companydata.settings("mle"), capacity=50, spool_dir=tmp_path / "spool")
    for start in range(0, 400, 20):  # faster than one writer's batches: the buffer fills again and again
        logger.log(records(20, start=start))
        assert logger.stats()["pending"] <= 50 + 70  # memory stays bounded: a full buffer and a batch in flight
    assert logger.flush()
    assert logger.stats() | {"failures": 0} == {
        "written": 400,
        "pending": 0,
        "spooled": 0,
        "replayed": 0,
        "dead_lettered": 0,
        "dropped": 0,
        "failures": 0,
        "database_available": True,
    }
    assert count(companydata) == 400 and not (tmp_path / "spool").exists()
    logger.close()


# -- batch records: a request of many rows is one row of prediction_batches ---------------------


def batch_columns(n: int) -> dict[str, np.ndarray]:
    return {
        "attr_a": np.arange(n) % 5 + 1.0,
        "attr_b": np.array(["c", None, "é\t"] * (n // 3) + ["c"] * (n % 3), dtype=object),
        "scd_a": np.where(np.arange(n) % 4 == 0, np.nan, np.linspace(0, 1, n)),
        "scd_b": np.arange(n) % 3 + 0.5 * (np.arange(n) % 2),
    }


def batch_verdicts(n: int) -> list[Verdict]:
    flagged = Verdict(False, (Finding(("attr_a",), "attr_a out of range"),))
    return [flagged if i % 7 == 6 else Verdict(True) for i in range(n)]


def batch_record(n: int, start: int = 0, *, gated: bool = True) -> BatchRecord:
    """A request of n rows as the API logs it (every 7th row flagged)."""
    idx = np.arange(start, start + n)
    verdicts = batch_verdicts(n) if gated else None
    return BatchRecord.from_columns(idx, idx % 2, np.linspace(0, 1, n), "v1", batch_columns(n), KINDS, "key", verdicts)


def logged_rows(db) -> list[tuple]:
    return db.query(
        "SELECT source, batch_row, client_idx, label, probability, features, in_distribution, ood_reasons"
        " FROM prediction_log ORDER BY client_idx"
    )


def test_a_batch_is_one_row_and_the_view_shows_each_prediction_as_a_single_row_would_be(companydata) -> None:
    batch = batch_record(10, start=100)
    singles = [  # the same predictions, each logged alone
        PredictionRecord.from_columns(
            [batch.client_idx[i]],
            batch.label[i : i + 1],
            batch.probability[i : i + 1],
            "v1",
            {name: values[i : i + 1] for name, values in batch_columns(10).items()},
            KINDS,
            "key",
            batch_verdicts(10)[i : i + 1],
        )[0]
        for i in range(10)
    ]
    logger = PredictionLogger(companydata.settings("mle"))
    logger.log([batch, batch_record(3, start=500, gated=False)])
    assert logger.flush()
    assert companydata.query("SELECT rows FROM prediction_batches ORDER BY rows") == [(3,), (10,)]
    assert companydata.query("SELECT count(*) FROM predictions") == [(0,)]
    rows = logged_rows(companydata)
    assert len(rows) == 13 and logger.stats()["written"] == 13
    assert [r[:2] for r in rows[:10]] == [("batch", i) for i in range(1, 11)]
    assert rows[6][6:] == (False, ["attr_a out of range"]) and rows[5][6:] == (True, [])
    assert rows[10][6:] == (None, None)  # no verdicts: no gate, no reasons
    # The same predictions logged one row each read back identically through the view.
    companydata.query("TRUNCATE prediction_batches")
    logger.log(singles)
    assert logger.flush()
    assert [r[2:] for r in logged_rows(companydata)] == [r[2:] for r in rows[:10]]
    logger.close()


def test_batch_features_are_written_as_single_rows_write_them() -> None:
    columns = {
        "attr_a": np.array([1.0, np.nan, -(2.0**31), 1e20]),
        "attr_b": np.array(["c", None, 'quo"te\\ \t\n é', float("nan")], dtype=object),
        "scd_a": np.array([0.1 + 0.2, np.nan, 5.0, -0.0]),
        "scd_b": np.array([3.0, 4.0, np.nan, 0.0]),
    }
    whole = json.loads(features_columns_json(columns, KINDS))
    assert [{k: whole[k][i] for k in KINDS} for i in range(4)] == [json.loads(r) for r in features_json(columns, KINDS)]
    assert features_columns_json({"attr_a": np.array([1.0, 2.0])}, {"attr_a": "integer"}) == '{"attr_a":[1,2]}'


def test_a_batch_written_twice_lands_once_and_beside_new_ones(companydata) -> None:
    logger = PredictionLogger(companydata.settings("mle"))
    first, second = batch_record(20), batch_record(20, start=20)
    logger.log([first])
    assert logger.flush()
    logger.log([first, second, *records(3, start=900)])  # a retry after an ambiguous failure, and new records
    assert logger.flush()
    assert companydata.query("SELECT count(*), count(DISTINCT batch_id) FROM prediction_batches") == [(2, 2)]
    assert companydata.query("SELECT count(*), count(DISTINCT client_idx) FROM prediction_log") == [(43, 43)]
    assert logger.stats()["dead_lettered"] == 0 and logger.stats()["failures"] == 0
    logger.close()


def test_a_batch_with_arrays_of_another_length_is_refused_and_dead_lettered_alone(companydata) -> None:
    bad = batch_record(5)._replace(label=np.zeros(4, dtype=np.int64))
    logger = PredictionLogger(companydata.settings("mle"))
    logger.log([batch_record(5, start=10), bad, *records(3, start=100), batch_record(6, start=20)])
    assert logger.flush()
    assert companydata.query("SELECT count(*) FROM prediction_log") == [(5 + 3 + 6,)]
    letters = companydata.query("SELECT prediction_id, record, error FROM prediction_dead_letters")
    assert len(letters) == 1 and letters[0][0] == bad.batch_id
    assert "prediction_batches_check1" in letters[0][2] and "CheckViolation" in letters[0][2]
    kept = loads(letters[0][1])
    assert (
        isinstance(kept, BatchRecord) and kept.label.tolist() == [0] * 4 and kept.client_idx.tolist() == list(range(5))
    )
    assert logger.stats()["dead_lettered"] == 5 and logger.stats()["written"] == 14
    logger.close()


def test_buffer_capacity_counts_rows_and_batches_spool_and_replay_exactly_once(companydata, tmp_path) -> None:
    spool = tmp_path / "spool"
    logger = PredictionLogger(companydata.settings("mle"), capacity=100, max_backoff=0.2, spool_dir=spool)
    logger.log([batch_record(10)])
    assert logger.flush()
    companydata.cluster.stop()
    try:
        logger.log([batch_record(60, start=100), *records(5, start=300)])
        assert logger.stats()["pending"] == 65 and logger.health()["buffered"] == 65
        logger.log([batch_record(60, start=200)])  # 125 rows > 100: the oldest half goes to the spool
        assert logger.stats()["spooled"] >= 50 and list(spool.glob("*.jsonl"))
        logger.close(timeout=0.2)  # the rest too
        assert logger.stats()["spooled"] == 125 and logger.stats()["dropped"] == 0
    finally:
        companydata.cluster.start(fast=True)
    replayer = PredictionLogger(companydata.settings("mle"), spool_dir=spool)
    replayer.start()
    wait_until(lambda: not list(spool.glob("*.jsonl")), what="the replay")
    assert replayer.stats()["replayed"] == 125
    assert companydata.query("SELECT count(*), count(DISTINCT client_idx) FROM prediction_log") == [(135, 135)]
    replayer.close()


def test_a_database_made_before_prediction_batches_holds_batches_until_95_is_applied(companydata) -> None:
    companydata.query("DROP VIEW prediction_log")
    companydata.query("DROP TABLE prediction_batches")
    try:
        logger = PredictionLogger(companydata.settings("mle"), max_backoff=0.05, unready_after=0.1)
        logger.start()
        wait_until(lambda: logger.health()["state"] == "failing", what="the probe to see the missing table")
        assert "95-prediction-batches.sql" in logger.health()["last_error"]
        logger.log([batch_record(8)])
        assert not logger.flush(timeout=0.3)
        assert "95-prediction-batches.sql" in logger.health()["last_error"]
        assert logger.stats()["dead_lettered"] == 0 and logger.stats()["pending"] == 8
    finally:
        apply_bootstrap_file(companydata, "95-prediction-batches.sql")
    apply_bootstrap_file(companydata, "95-prediction-batches.sql")  # twice: changes nothing
    assert logger.flush(timeout=30)
    assert companydata.query("SELECT count(*) FROM prediction_log") == [(8,)] and logger.health()["state"] == "ok"
    logger.close()


def test_binary_copy_encodes_what_postgresql_reads_back(companydata) -> None:
    record = batch_record(4)._replace(in_distribution=[True, None, False, True], probability=None, api_key=None)
    logger = PredictionLogger(companydata.settings("mle"))
    logger.log([record])
    assert logger.flush()
    got = companydata.query(
        "SELECT batch_id::text, model_version, api_key, predicted_at = %s::timestamptz, rows, client_idx, label,"
        " probability, in_distribution FROM prediction_batches",
        (record.predicted_at,),
    )
    assert got == [(str(uuid.UUID(record.batch_id)), "v1", None, True, 4, [0, 1, 2, 3], [0, 1, 0, 1], None,
                    [True, None, False, True])]  # fmt: skip
    assert batch_copy_binary([]).startswith(b"PGCOPY\n\xff\r\n\x00")
    logger.close()


def test_batch_records_share_transactions_up_to_batch_rows(companydata) -> None:
    """One commit per request would hold logged batches to the commits a second the database
    makes: records ride together, up to `batch_rows` predictions (logged_at is the transaction's time)."""
    logger = PredictionLogger(companydata.settings("mle"), batch_rows=250)
    logger.log([batch_record(100, start=i * 100) for i in range(6)])
    assert logger.flush()
    assert companydata.query("SELECT count(DISTINCT logged_at), count(*) FROM prediction_batches") == [(2, 6)]
    logger.close()


def test_a_batch_with_text_utf8_cannot_hold_is_dead_lettered_whole_and_the_log_goes_on(companydata) -> None:
    columns = batch_columns(4)
    columns["attr_b"] = np.array(["c", "lone \ud800 surrogate", None, "c"], dtype=object)
    bad = BatchRecord.from_columns(np.arange(4), np.zeros(4, int), None, "v1", columns, KINDS, None, batch_verdicts(4))
    logger = PredictionLogger(companydata.settings("mle"))
    logger.log([bad, batch_record(3, start=10)])
    assert logger.flush()
    assert companydata.query("SELECT count(*) FROM prediction_log") == [(3,)]
    (letter,) = companydata.query("SELECT record, error FROM prediction_dead_letters")
    assert letter[1].startswith("UnicodeEncodeError") and loads(letter[0]).features == bad.features
    logger.close()


def test_a_one_row_request_writes_its_features_as_the_column_writer_does() -> None:
    """/predict's straight path (one orjson call) and the column-wise one agree value for value."""
    odd = [
        (1.0, "c", 0.1 + 0.2, 3.0),
        (np.nan, None, np.nan, np.inf),
        (-(2.0**31), 'quo"te\\ \t\n é', -0.0, 2.5),
        (1e20, float("nan"), 1e-7, -np.inf),
        (2.0**63, "lone \ud800", 5e300, 0.0),
    ]
    for values in odd:
        columns = {
            name: np.array([value], dtype=object if name == "attr_b" else float)
            for name, value in zip(KINDS, values, strict=True)
        }
        (one,) = PredictionRecord.from_columns([1], np.array([0]), None, "v", columns, KINDS, None, [Verdict(True)])
        assert json.loads(one.features) == json.loads(features_json(columns, KINDS)[0]), values
