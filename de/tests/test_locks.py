"""The ETL's locks: runs exclude each other, and every wait for other sessions is bounded.

Real sessions on the real database. Tests wait for events (the ETL seen waiting in pg_locks,
a process exiting), each with a deadline, never for a fixed time.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors
from psycopg2.extensions import connection as PgConnection

from data_engineering import DatabaseBusy
from data_engineering.config import EtlSettings, LockSettings
from data_engineering.db import RUN_LOCK, etl_transaction
from data_engineering.features import build_features
from data_engineering.load import available_months, load_customers, load_sales
from machine_learning_engineering.config import ConfigError
from machine_learning_engineering.db import connect
from testkit.fixtures import TestDatabase

EVENT_DEADLINE = 60.0  # seconds for something we wait for to happen, on a loaded CI machine
QUICK = LockSettings(lock_timeout=0.3, lock_wait=60)


def run_etl(db: TestDatabase, raw_dir: Path, locks: LockSettings = QUICK) -> None:
    with etl_transaction(db.settings("etl"), locks) as cur:
        load_customers(cur, raw_dir)
        load_sales(cur, raw_dir, available_months(raw_dir))
        build_features(cur)


def digests(db: TestDatabase) -> dict[str, str]:
    return {t: db.digest(t) for t in sorted(db.created_tables())}


def flip_first_label(raw_dir: Path) -> None:
    """Change the input, so that a run that lands changes labels and feature_store."""
    path = raw_dir / "labels.csv"
    header, first, *rest = path.read_text().splitlines()
    idx, label = first.split(",")
    path.write_text("\n".join([header, f"{idx},{1 - int(label)}", *rest]) + "\n")


def start_cli(db: TestDatabase, raw_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "data_engineering", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=db.env(RAW_DATA_DIR=str(raw_dir), **env),
    )


def wait_until_etl_waits(db: TestDatabase, relation: str, running: Callable[[], bool]) -> None:
    """Poll pg_locks until an etl_user session is seen waiting for a lock on `relation`."""
    conn = connect(db.settings("admin"))
    conn.autocommit = True
    deadline = time.monotonic() + EVENT_DEADLINE
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
                    " WHERE NOT l.granted AND l.relation = to_regclass(%s) AND a.usename = 'etl_user')",
                    (relation,),
                )
                if cur.fetchone()[0]:
                    return
                assert running(), "the ETL ended before it was seen waiting"
                assert time.monotonic() < deadline, f"the ETL was not seen waiting for {relation}"
                time.sleep(0.005)  # poll interval, not a synchronisation
    finally:
        conn.close()


@contextmanager
def reader_in_transaction(db: TestDatabase, table: str, hostile: bool = False) -> Iterator[PgConnection]:
    """A ds_user session holding ACCESS SHARE on `table`, idle in its open transaction.

    hostile: it first turns off its own idle_in_transaction_session_timeout, as any session may.
    """
    conn = connect(db.settings("ds"))
    try:
        if hostile:
            conn.autocommit = True
            conn.cursor().execute("SET idle_in_transaction_session_timeout = 0")
            conn.autocommit = False
        conn.cursor().execute(f"SELECT count(*) FROM {table}")
        yield conn
    finally:
        conn.close()


# --- settings ---------------------------------------------------------------------------


def test_the_etl_runs_as_etl_user_with_lock_settings_from_the_environment() -> None:
    settings = EtlSettings.from_env({})
    assert settings.database.user == "etl_user"
    assert settings.locks == LockSettings(lock_timeout=2, lock_wait=300, statement_timeout=60)
    env = {"ETL_LOCK_TIMEOUT": "0.5", "ETL_LOCK_WAIT": "30", "ETL_STATEMENT_TIMEOUT": "10"}
    assert EtlSettings.from_env(env).locks == LockSettings(lock_timeout=0.5, lock_wait=30, statement_timeout=10)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ETL_LOCK_TIMEOUT": "0"}, "ETL_LOCK_TIMEOUT='0' must be greater than or equal to 0.001"),
        ({"ETL_LOCK_WAIT": "soon"}, "ETL_LOCK_WAIT='soon' is not a number"),
        ({"ETL_STATEMENT_TIMEOUT": "0.0001"}, "ETL_STATEMENT_TIMEOUT='0.0001' must be greater than or equal to 0.001"),
        (
            {"ETL_LOCK_TIMEOUT": "10", "ETL_LOCK_WAIT": "5"},
            "ETL_LOCK_WAIT (5 s) must be at least ETL_LOCK_TIMEOUT (10 s)",
        ),
    ],
)
def test_bad_lock_settings_are_named(env, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        EtlSettings.from_env(env)


def test_a_bad_lock_setting_stops_the_cli_before_it_connects(companydata, raw_dir) -> None:
    result = start_cli(companydata, raw_dir, "build-features", ETL_LOCK_WAIT="-1")
    _, stderr = result.communicate(timeout=EVENT_DEADLINE)
    assert result.returncode == 1 and "ETL_LOCK_WAIT='-1' must be greater than or equal to 0.001" in stderr


# --- the run lock -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["EXCLUSIVE", "ACCESS SHARE"])
@pytest.mark.parametrize("role", ["ds", "mle", "api_admin"])
def test_only_etl_user_can_take_the_run_lock(companydata, role, mode) -> None:
    statement = f"LOCK TABLE {RUN_LOCK} IN {mode} MODE"
    conn = connect(companydata.settings(role))
    try:
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for schema etl_private"):
            conn.cursor().execute(statement)
    finally:
        conn.close()
    companydata.query(statement, role="etl")  # the same statement works for the ETL's own role


def test_the_old_advisory_lock_no_longer_stops_the_etl(companydata, raw_dir) -> None:
    conn = connect(companydata.settings("ds"))
    conn.autocommit = True
    try:
        conn.cursor().execute("SELECT pg_advisory_lock(%s)", (0x0E71,))  # the key the ETL used to wait for
        run_etl(companydata, raw_dir, LockSettings(lock_timeout=0.3, lock_wait=5))
    finally:
        conn.close()
    assert companydata.query("SELECT count(*) FROM feature_store")[0][0] == 500


def test_two_etl_runs_wait_for_each_other(companydata, raw_dir, caplog) -> None:
    first = etl_transaction(companydata.settings("etl"), QUICK)
    cur = first.__enter__()
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            run_etl(companydata, raw_dir)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=second)
    try:
        load_customers(cur, raw_dir)
        thread.start()
        wait_until_etl_waits(companydata, RUN_LOCK, thread.is_alive)
        deadline = time.monotonic() + EVENT_DEADLINE
        while not any(r.levelname == "WARNING" for r in caplog.records):  # a lock_timeout went by
            assert thread.is_alive() and time.monotonic() < deadline, "the second run did not say it waits"
            time.sleep(0.005)
        assert not outcome  # still waiting while the first run holds the lock
        assert "customer_profiles" not in companydata.tables()  # and the first has not committed
    finally:
        first.__exit__(None, None, None)  # commits the first run
    thread.join(timeout=EVENT_DEADLINE)
    assert outcome == [None]
    assert companydata.query("SELECT count(*) FROM feature_store")[0][0] == 500
    warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "waiting for an EXCLUSIVE lock on etl_private.run_lock (the ETL run lock: another ETL command" in warning
    assert "(etl_user, application 'data_engineering', ExclusiveLock on etl_private.run_lock, idle in" in warning


def test_a_run_that_cannot_get_the_run_lock_gives_up_and_changes_nothing(companydata, raw_dir) -> None:
    run_etl(companydata, raw_dir)
    before = digests(companydata)
    flip_first_label(raw_dir)
    with etl_transaction(companydata.settings("etl"), QUICK), pytest.raises(DatabaseBusy) as busy:
        run_etl(companydata, raw_dir, LockSettings(lock_timeout=0.2, lock_wait=1))
    message = str(busy.value)
    assert re.match(rf"gave up after 1 s \(\d+ attempts\) waiting for an EXCLUSIVE lock on {RUN_LOCK} \(", message)
    assert "blocked by pid " in message and "(etl_user, application 'data_engineering', ExclusiveLock" in message
    assert message.endswith("nothing was changed in the database; retry later")
    assert digests(companydata) == before


# --- readers in the way of the swaps ------------------------------------------------------


@pytest.fixture
def short_idle_timeout(companydata) -> Iterator[str]:
    """ds_user's idle_in_transaction_session_timeout (the bootstrap sets it) lowered to 2 s."""
    settings = companydata.query(
        "SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'ds_user'::regrole AND setdatabase = 0"
    )[0][0]
    before = dict(s.split("=", 1) for s in settings)["idle_in_transaction_session_timeout"]
    companydata.query("ALTER ROLE ds_user SET idle_in_transaction_session_timeout = '2s'")
    try:
        yield "2s"
    finally:
        companydata.query("ALTER ROLE ds_user SET idle_in_transaction_session_timeout = %s", (before,))


def test_the_etl_waits_for_an_idle_reader_until_the_server_ends_its_session(
    companydata, raw_dir, short_idle_timeout
) -> None:
    run_etl(companydata, raw_dir)
    flip_first_label(raw_dir)
    labels = companydata.digest("labels")
    # The reader starts with its timeout off, so the server cannot end it before the ETL is
    # seen waiting; then it goes back to its role's setting, and idles in its transaction.
    with reader_in_transaction(companydata, "feature_store", hostile=True) as reader:
        pid = reader.get_backend_pid()
        etl = start_cli(companydata, raw_dir, "etl", "--force", ETL_LOCK_TIMEOUT="0.5", ETL_LOCK_WAIT="120")
        wait_until_etl_waits(companydata, "feature_store", lambda: etl.poll() is None)
        cur = reader.cursor()
        cur.execute("SET idle_in_transaction_session_timeout TO DEFAULT")
        cur.execute("SHOW idle_in_transaction_session_timeout")
        assert cur.fetchone() == (short_idle_timeout,)
        _, stderr = etl.communicate(timeout=EVENT_DEADLINE * 2)
        assert etl.returncode == 0, stderr
        with pytest.raises(psycopg2.OperationalError):  # the server ended the idle session
            reader.cursor().execute("SELECT 1")
    assert "WARNING data_engineering.db: waiting for an ACCESS EXCLUSIVE lock on customer_profiles, " in stderr
    holder = f"blocked by pid {pid} (ds_user, application 'companydata-stack', AccessShareLock on feature_store"
    assert holder in stderr
    assert companydata.digest("labels") != labels  # the run landed


def test_a_reader_that_never_lets_go_makes_the_etl_give_up_with_status_75(companydata, raw_dir) -> None:
    run_etl(companydata, raw_dir)
    before = digests(companydata)
    flip_first_label(raw_dir)  # so that a run that landed would show
    with reader_in_transaction(companydata, "feature_store", hostile=True) as reader:
        pid = reader.get_backend_pid()
        etl = start_cli(companydata, raw_dir, "etl", "--force", ETL_LOCK_TIMEOUT="0.3", ETL_LOCK_WAIT="3")
        _, stderr = etl.communicate(timeout=EVENT_DEADLINE * 2)
        reader.cursor().execute("SELECT 1")  # the reader is untouched
    assert etl.returncode == 75, stderr
    assert "Traceback" not in stderr
    error = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(error) == 1, stderr
    assert re.search(
        r"gave up after 3 s \(\d+ attempts\) waiting for an ACCESS EXCLUSIVE lock on customer_profiles,"
        r" customer_activity, labels, stores, feature_store \(to swap in the new tables\): blocked by pid",
        error[0],
    )
    holder = f"blocked by pid {pid} (ds_user, application 'companydata-stack', AccessShareLock on feature_store"
    assert holder in error[0]
    assert error[0].endswith("nothing was changed in the database; retry later")
    assert stderr.count("WARNING") >= 2  # it said what it waited for while it waited
    assert digests(companydata) == before


def test_a_new_reader_waits_at_most_about_lock_timeout_while_the_etl_waits(companydata, raw_dir) -> None:
    run_etl(companydata, raw_dir)
    lock_timeout = 1.0
    with reader_in_transaction(companydata, "feature_store", hostile=True) as blocker:
        etl = start_cli(companydata, raw_dir, "build-features", ETL_LOCK_TIMEOUT=str(lock_timeout), ETL_LOCK_WAIT="120")
        reader = connect(companydata.settings("ds"))
        reader.autocommit = True
        try:
            cur = reader.cursor()
            cur.execute("SET statement_timeout = '30s'")  # were it stalled for good, fail instead of hanging
            for _ in range(3):
                wait_until_etl_waits(companydata, "feature_store", lambda: etl.poll() is None)
                started = time.monotonic()
                cur.execute("SELECT count(*) FROM feature_store")
                assert cur.fetchone()[0] == 500
                assert time.monotonic() - started < lock_timeout + 3.0
        finally:
            reader.close()
        assert etl.poll() is None  # the ETL still waits for the blocker
        blocker.rollback()  # the blocker lets go: the ETL goes ahead
        _, stderr = etl.communicate(timeout=EVENT_DEADLINE * 2)
    assert etl.returncode == 0, stderr
    assert "build feature_store: 500 rows" in stderr
