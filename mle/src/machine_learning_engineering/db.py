"""Connections that survive a database that is still starting.

Every container in the stack may start before PostgreSQL accepts connections, so all of
them connect through `connect` / `wait_for_database`, which retry with capped exponential
backoff and log each attempt, instead of crashing and relying on restart loops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg2
import sqlalchemy
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection
from psycopg2.extensions import cursor as PgCursor
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.errors import MLEError

log = logging.getLogger(__name__)

# Failures that no amount of waiting fixes; everything else OperationalError says is
# treated as "not up yet" (refused, starting up, shutting down, DNS not ready in Compose).
_PERMANENT = ("password authentication failed", "does not exist", "no pg_hba.conf entry")


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (libpq's run to several), or its type when empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, psycopg2.OperationalError) and not any(p in str(exc) for p in _PERMANENT)


def _log_retry(settings: DatabaseSettings) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = first_line(exc) if exc else "unknown"
        log.warning(
            "database %s not ready (attempt %d: %s); retrying in %.1f s",
            settings.where,
            state.attempt_number,
            reason,
            state.next_action.sleep if state.next_action else 0.0,
        )

    return before_sleep


def connect_once(settings: DatabaseSettings, application_name: str = "companydata-stack") -> PgConnection:
    """One attempt, five seconds at most: for callers that have their own retry policy."""
    return psycopg2.connect(
        host=settings.host,
        port=settings.port,
        dbname=settings.name,
        user=settings.user,
        password=settings.password,
        connect_timeout=5,
        application_name=application_name,
    )


def connect(settings: DatabaseSettings, timeout: float | None = None) -> PgConnection:
    """Open a psycopg2 connection, retrying while the server is not ready yet."""
    retrying = Retrying(
        stop=stop_after_delay(settings.connect_timeout if timeout is None else timeout),
        wait=wait_exponential(multiplier=0.25, max=5),
        retry=retry_if_exception(_is_transient),
        before_sleep=_log_retry(settings),
        reraise=True,
    )
    conn = retrying(connect_once, settings)
    if retrying.statistics.get("attempt_number", 1) > 1:
        log.info("database %s is up", settings.where)
    return conn


def wait_for_database(settings: DatabaseSettings, timeout: float | None = None) -> None:
    """Block until the server accepts our login (or raise after `timeout` seconds)."""
    connect(settings, timeout).close()


def create_engine(settings: DatabaseSettings) -> sqlalchemy.Engine:
    """An engine for pandas and SQLAlchemy users; call `wait_for_database` first at start-up."""
    url = sqlalchemy.URL.create(
        "postgresql+psycopg2",
        username=settings.user,
        password=settings.password,
        host=settings.host,
        port=settings.port,
        database=settings.name,
    )
    return sqlalchemy.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def fetch_one(cur: PgCursor) -> tuple[Any, ...]:
    """The row a query that always returns exactly one (an aggregate, `SELECT <expression>`) returned."""
    row = cur.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row


class TableNotReady(MLEError, TimeoutError):
    """A table did not appear, or stayed empty, within the allowed time."""


def _table_state(settings: DatabaseSettings, table: str) -> str | None:
    """None when `table` exists and has a row; otherwise what is missing."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if not fetch_one(cur)[0]:
                return "does not exist yet"
            cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table)))
            return None if fetch_one(cur)[0] else "exists but is empty"
    finally:
        conn.close()


def wait_for_table(settings: DatabaseSettings, table: str, timeout: float) -> None:
    """Block until `table` exists and has rows, checking with capped exponential backoff.

    Jobs downstream of the ETL start whenever they start (the challenge asks for it): they
    wait here, logging every check, instead of crashing and relying on restart policies.
    """

    def check() -> None:
        state = _table_state(settings, table)
        if state is not None:
            raise TableNotReady(f"table {table} {state}")

    def before_sleep(state: RetryCallState) -> None:
        log.info(
            "waiting: %s (check %d); next check in %.1f s",
            state.outcome.exception() if state.outcome else table,
            state.attempt_number,
            state.next_action.sleep if state.next_action else 0.0,
        )

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=1, max=30),
        retry=retry_if_exception_type(TableNotReady),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        retrying(check)
    except TableNotReady as exc:
        raise TableNotReady(f"{exc} after waiting {timeout:g} s; has the ETL run?") from None
    if retrying.statistics.get("attempt_number", 1) > 1:
        log.info("table %s is ready", table)
