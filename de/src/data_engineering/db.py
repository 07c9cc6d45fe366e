"""Transactions and table plumbing for the ETLs, on top of the shared connection helper.

Each command is one transaction as etl_user. Runs exclude each other with a table lock only
etl_user can take (etl_private.run_lock). A command builds its tables under staged names and
swaps them all in at its end, under ACCESS EXCLUSIVE locks taken all at once, so readers see
the old tables or the new ones. Every lock wait is bounded: one attempt waits lock_timeout at
most, inside a savepoint that is rolled back on timeout (the readers queued behind us go
ahead); we log who holds the locks, back off and retry until lock_wait has passed, then raise
DatabaseBusy with the transaction rolled back.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from importlib import resources
from typing import Any

from psycopg2 import errors, sql
from psycopg2.extensions import cursor as PgCursor

from data_engineering import DatabaseBusy
from data_engineering.config import LockSettings
from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect, fetch_one

log = logging.getLogger(__name__)

RUN_LOCK = "etl_private.run_lock"
# Lock modes the ETL asks for -> the pg_locks modes another session may hold without blocking it.
_COMPATIBLE = {"EXCLUSIVE": ["AccessShareLock"], "ACCESS EXCLUSIVE": []}
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0
_RETRY_LATER = "nothing was changed in the database; retry later"


class EtlCursor(PgCursor):
    """The cursor of an ETL command: its lock settings, the tables it has staged and the sales
    months it has replaced (for the data checks' row-count comparison)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.locks = LockSettings()
        self.staged: dict[str, str] = {}  # live name -> staged name, in staging order
        # Sales months this command replaced in place: month -> (rows published before, rows now).
        self.replaced_months: dict[date, tuple[int, int]] = {}


def read_sql(name: str) -> str:
    return resources.files("data_engineering").joinpath("sql", name).read_text()


def table_sql(name: str, table: str = "", sources: Mapping[str, str] | None = None, **literals: object) -> sql.Composed:
    """A SQL file with {table} and {table_<suffix>} (index names) filled in as identifiers,
    {<name>} for each of `sources` (the table to read as <name>), and literals.

    Staged tables are built under a temporary name, and so are their indexes, which the swap
    renames along with the table.
    """
    text = read_sql(name)
    names = {key: sql.Identifier(table + key[len("table") :]) for key in re.findall(r"\{(table\w*)\}", text)}
    names.update({key: sql.Identifier(value) for key, value in (sources or {}).items()})
    return sql.SQL(text).format(**names, **{k: sql.Literal(v) for k, v in literals.items()})


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@contextmanager
def etl_transaction(settings: DatabaseSettings, locks: LockSettings | None = None) -> Iterator[EtlCursor]:
    """One transaction for a whole command: it all lands, or the database is unchanged."""
    conn = connect(settings)
    try:
        with conn, conn.cursor(cursor_factory=EtlCursor) as cur:
            cur.locks = locks or LockSettings()
            cur.execute(
                "SELECT set_config('application_name', 'data_engineering', false),"
                " set_config('lock_timeout', %s, false)",
                (_ms(cur.locks.lock_timeout),),
            )
            lock_tables(cur, [RUN_LOCK], "EXCLUSIVE", "the ETL run lock: another ETL command is running")
            yield cur
            swap_staged(cur)
    except errors.LockNotAvailable as exc:  # outside lock_tables: only etl_user or admin can cause it
        raise DatabaseBusy(
            f"a lock wait exceeded ETL_LOCK_TIMEOUT: {exc.diag.message_primary}; {_RETRY_LATER}"
        ) from None
    finally:
        conn.close()


def lock_tables(cur: EtlCursor, tables: Sequence[str], mode: str, why: str) -> None:
    """LOCK TABLE tables IN mode MODE, all at once, retrying for cur.locks.lock_wait at most."""
    statement = sql.SQL("LOCK TABLE {} IN {} MODE").format(
        sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in tables), sql.SQL(mode)
    )
    deadline = time.monotonic() + cur.locks.lock_wait
    for attempt in itertools.count(1):
        cur.execute("SAVEPOINT etl_lock")
        try:
            cur.execute(statement)
        except (errors.LockNotAvailable, errors.DeadlockDetected):
            cur.execute("ROLLBACK TO SAVEPOINT etl_lock")  # leave the queue: readers behind us go ahead
        else:
            cur.execute("RELEASE SAVEPOINT etl_lock")
            return
        holders = lock_holders(cur, tables, mode)
        left = deadline - time.monotonic()
        wanted = f"an {mode} lock on {', '.join(tables)} ({why})"
        if left <= 0:
            raise DatabaseBusy(
                f"gave up after {cur.locks.lock_wait:g} s ({attempt} attempts) waiting for {wanted}:"
                f" blocked by {holders}; {_RETRY_LATER}"
            )
        pause = min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX, left)
        log.warning(
            "waiting for %s: blocked by %s (attempt %d; retrying in %.1f s, giving up in %.0f s)",
            wanted,
            holders,
            attempt,
            pause,
            left,
        )
        time.sleep(pause)


def lock_holders(cur: PgCursor, tables: Sequence[str], mode: str) -> str:
    """Who holds a lock on `tables` that conflicts with `mode`, as far as we may see."""
    cur.execute(read_sql("lock_holders.sql"), {"tables": list(tables), "compatible": _COMPATIBLE[mode]})
    described = []
    for pid, table, held, user, application, state, transaction_seconds in cur.fetchall():
        details = [user or "unknown user", f"application {application!r}", f"{held} on {table}"]
        if state is None:
            details.append("state not visible to etl_user")
        elif transaction_seconds is None:
            details.append(state)
        else:
            details.append(f"{state}, transaction open {transaction_seconds} s")
        described.append(f"pid {pid} ({', '.join(details)})")
    return "; ".join(described) or "sessions that have gone since"


def stage(cur: EtlCursor, table: str) -> str:
    """The name to build `table`'s replacement under; it is swapped in when the command ends."""
    staged = f"{table}__new"
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staged)))
    cur.staged[table] = staged
    return staged


def source_table(cur: PgCursor, table: str) -> str:
    """Where this command reads `table`: its staged replacement if it made one, else the table."""
    staged: dict[str, str] = getattr(cur, "staged", {})
    return staged.get(table, table)


def swap_staged(cur: EtlCursor) -> None:
    """Replace every live table by its staged one, under ACCESS EXCLUSIVE locks on them all."""
    if not cur.staged:
        return
    live = [table for table in cur.staged if table_exists(cur, table)]
    if live:
        lock_tables(cur, live, "ACCESS EXCLUSIVE", "to swap in the new tables")
    cur.execute("SET LOCAL statement_timeout = %s", (_ms(cur.locks.statement_timeout),))
    try:
        for table, staged in cur.staged.items():
            swap_in(cur, staged, table)
    except errors.QueryCanceled as exc:
        if "statement timeout" not in str(exc):
            raise
        raise DatabaseBusy(
            f"swapping in {', '.join(cur.staged)} took longer than ETL_STATEMENT_TIMEOUT"
            f" ({cur.locks.statement_timeout:g} s); {_RETRY_LATER}"
        ) from None
    cur.execute("RESET statement_timeout")
    cur.staged.clear()


def table_exists(cur: PgCursor, table: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",))
    return bool(fetch_one(cur)[0])


def table_columns(cur: PgCursor, table: str) -> list[str]:
    cur.execute(
        "SELECT attname FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return [row[0] for row in cur.fetchall()]


def swap_in(cur: PgCursor, staged: str, table: str) -> None:
    """Replace `table` by `staged` (same transaction): readers see the old table or the new one."""
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staged), sql.Identifier(table)))
    cur.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s AND indexname LIKE %s",
        (table, f"{staged}%"),
    )
    for (index,) in cur.fetchall():
        renamed = table + index[len(staged) :]
        cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(index), sql.Identifier(renamed)))
