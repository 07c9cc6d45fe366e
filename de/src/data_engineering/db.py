"""Transactions and table plumbing for the ETLs, on top of the shared connection helper."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

from psycopg2 import sql
from psycopg2.extensions import cursor as PgCursor

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect

log = logging.getLogger(__name__)

# Two ETL runs at once would each swap in their own tables; one waits for the other instead.
_ETL_LOCK_KEY = 0x0E71


def read_sql(name: str) -> str:
    return resources.files("data_engineering").joinpath("sql", name).read_text()


def table_sql(name: str, table: str, **literals: object) -> sql.Composed:
    """A SQL file with {table} and {table_<suffix>} (index names) filled in as identifiers.

    Staged tables are built under a temporary name, and so are their indexes, which the swap
    renames along with the table.
    """
    text = read_sql(name)
    names = {key: sql.Identifier(table + key[len("table") :]) for key in re.findall(r"\{(table\w*)\}", text)}
    return sql.SQL(text).format(**names, **{k: sql.Literal(v) for k, v in literals.items()})


@contextmanager
def etl_transaction(settings: DatabaseSettings) -> Iterator[PgCursor]:
    """One transaction for a whole command: it all lands, or the database is unchanged."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ETL_LOCK_KEY,))
            yield cur
    finally:
        conn.close()


def table_exists(cur: PgCursor, table: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",))
    return bool(cur.fetchone()[0])


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
