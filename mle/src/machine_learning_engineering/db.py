"""Connections that survive a database that is still starting.

Every container in the stack may start before PostgreSQL accepts connections, so all of
them connect through `connect` / `wait_for_database`, which retry with capped exponential
backoff and log each attempt, instead of crashing and relying on restart loops.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg2
import sqlalchemy
from psycopg2 import extensions, sql
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


# --- binary COPY: columns in and out without a row object per value -----------------------------
#
# Reading 1.5 M rows with `cursor.fetchall` builds a tuple and five Python objects per row;
# `COPY ... TO STDOUT (FORMAT binary)` sends each value as its bytes, which `copy_out` walks once
# (a Numba-compiled loop over the lengths) and turns into NumPy columns. `copy_in` is the way
# back: NumPy columns laid out as a binary COPY stream with structured arrays, no row objects.
# Format: https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.4

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = _SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # no flags, no header extension
_TRAILER = b"\xff\xff"
# Type OIDs (pg_type) that copy_out decodes and copy_in writes: value bytes of a fixed size, or
# text (0). Any other type: cast it in the query (`::float8`, `::text`).
BOOL, INT2, INT4, INT8, FLOAT4, FLOAT8, DATE = 16, 21, 23, 20, 700, 701, 1082
TEXT, VARCHAR, BPCHAR = 25, 1043, 1042
DECODED_TYPES: dict[int, int] = {
    BOOL: 1,
    INT2: 2,
    INT4: 4,
    INT8: 8,
    FLOAT4: 4,
    FLOAT8: 8,
    TEXT: 0,
    VARCHAR: 0,
    BPCHAR: 0,
}
INTEGER_TYPES = frozenset({INT2, INT4, INT8})
NUMBER_TYPES = frozenset({INT2, INT4, INT8, FLOAT4, FLOAT8})
TEXT_TYPES = frozenset({TEXT, VARCHAR, BPCHAR})
_EPOCH = np.datetime64("2000-01-01", "D")  # PostgreSQL's day 0 for date

Column = np.ndarray[Any, Any]


class CopyFormatError(MLEError, ValueError):
    """A binary COPY stream that is not what its columns say: the message says where."""


def _walk(buf, start, sizes, slots, texts, capacity):  # type: ignore[no-untyped-def]  # compiled by Numba (`_walker`)
    """Walk a binary COPY stream from `start` (its first tuple), up to `capacity` tuples.
    sizes[c]: column c's value size in bytes (0: any length, text); slots[c]: its row in
    `hashed` (text columns). Fills `value` (fixed-size values as signed big-endian integers,
    text: where its bytes start), `length` (-1 for NULL) and `hashed` (FNV-1a of text bytes).
    Returns (tuples, error, position, ...): error 0, or 1 (a tuple with another number of
    fields), 2 (a value of another size), 3 (the stream ends early)."""
    columns = len(sizes)
    value = np.empty((columns, capacity), np.int64)
    length = np.empty((columns, capacity), np.int32)
    hashed = np.empty((texts, capacity), np.uint64)
    end = len(buf)
    p = start
    n = 0
    while True:
        if p + 2 > end:
            return n, 3, p, value, length, hashed
        count = (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
        if count == 0xFFFF:  # the trailer: int16 -1
            return n, 0, p + 2, value, length, hashed
        if count != columns or n == capacity:
            return n, 1, p, value, length, hashed
        p += 2
        for c in range(columns):
            if p + 4 > end:
                return n, 3, p, value, length, hashed
            size = np.int32(
                (np.uint32(buf[p]) << 24) | (np.uint32(buf[p + 1]) << 16) | (np.uint32(buf[p + 2]) << 8) | buf[p + 3]
            )
            p += 4
            length[c, n] = size
            if size < 0:
                value[c, n] = 0
                if sizes[c] == 0:
                    hashed[slots[c], n] = 0
                continue
            if p + size > end:
                return n, 3, p, value, length, hashed
            expected = sizes[c]
            if expected == 0:
                value[c, n] = p
                h = np.uint64(14695981039346656037)
                for k in range(size):
                    h = (h ^ np.uint64(buf[p + k])) * np.uint64(1099511628211)
                hashed[slots[c], n] = h
            elif size != expected:
                return n, 2, p, value, length, hashed
            elif size == 8:
                v = np.int64(0)
                for k in range(8):
                    v = (v << 8) | np.int64(buf[p + k])
                value[c, n] = v
            elif size == 4:
                value[c, n] = np.int64(
                    np.int32(
                        (np.uint32(buf[p]) << 24)
                        | (np.uint32(buf[p + 1]) << 16)
                        | (np.uint32(buf[p + 2]) << 8)
                        | buf[p + 3]
                    )
                )
            elif size == 2:
                value[c, n] = np.int64(np.int16((np.uint16(buf[p]) << 8) | np.uint16(buf[p + 1])))
            else:  # bool
                value[c, n] = np.int64(buf[p])
            p += size
        n += 1


def _same_bytes(buf, starts, lengths, first, codes):  # type: ignore[no-untyped-def]  # compiled by Numba
    """Whether every text value equals the first one with its hash (codes[i]: its hash's number,
    first[code]: that hash's first row), i.e. whether FNV-1a had no collision here."""
    for i in range(len(codes)):
        a, b, size = starts[i], starts[first[codes[i]]], lengths[i]
        if size != lengths[first[codes[i]]]:
            return False
        for k in range(size):
            if buf[a + k] != buf[b + k]:
                return False
    return True


_kernels: tuple[Any, Any] | None = None
_kernels_lock = threading.Lock()


def _walker() -> tuple[Any, Any]:
    """The two loops, compiled on first use in a process (about a second; no on-disk cache,
    as the compiled scorer: a process compiles its own); they release the GIL."""
    global _kernels
    with _kernels_lock:
        if _kernels is None:
            import numba
            from numba import types

            stream = types.Array(types.uint8, 1, "C", readonly=True)  # callers pass read-only views
            i64, i32, u64 = types.int64, types.int32, types.uint64
            walk = numba.njit(
                types.Tuple((i64, i64, i64, i64[:, ::1], i32[:, ::1], u64[:, ::1]))(  # type: ignore[no-untyped-call]
                    stream, i64, i64[::1], i64[::1], i64, i64
                ),
                nogil=True,
                cache=False,
            )(_walk)
            same = numba.njit(types.boolean(stream, i64[::1], i32[::1], i64[::1], i64[::1]), nogil=True, cache=False)(
                _same_bytes
            )
            _kernels = (walk, same)
        return _kernels


def describe(cur: PgCursor, query: sql.Composable | str) -> dict[str, int]:
    """Column name -> type OID of what `query` (a SELECT) returns, without running it for rows."""
    text = query.as_string(cur) if isinstance(query, sql.Composable) else query
    cur.execute(f"SELECT * FROM ({text}) AS described LIMIT 0")
    return {d.name: d.type_code for d in cur.description or ()}


def _first_tuple(buf: np.ndarray[Any, np.dtype[np.uint8]]) -> int:
    if len(buf) < 19 or bytes(buf[:11]) != _SIGNATURE:
        raise CopyFormatError("not a binary COPY stream (no PGCOPY signature)")
    extension = int.from_bytes(bytes(buf[15:19]), "big")
    return 19 + extension


def decode_binary(data: bytes | memoryview, types: Mapping[str, int], encoding: str = "utf-8") -> dict[str, Column]:
    """A binary COPY stream of `types` (name -> type OID, in the stream's order) as NumPy columns:
    integers as int64 (float64 with NaN when a value is NULL), floats as float64 with NaN for
    NULL, booleans as bool (object with None when NULL), text as object arrays of str with None."""
    unknown = {name: oid for name, oid in types.items() if oid not in DECODED_TYPES}
    if unknown:
        raise CopyFormatError(
            "cannot decode column(s) "
            + ", ".join(f"{n} (type oid {o})" for n, o in unknown.items())
            + ": cast them in the query (::float8, ::text)"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    buf.flags.writeable = False
    walk, same = _walker()
    sizes = np.array([DECODED_TYPES[oid] for oid in types.values()], dtype=np.int64)
    slots = np.cumsum(sizes == 0) - 1
    start = _first_tuple(buf)
    capacity = max(0, (len(buf) - start - 2) // (2 + 4 * len(sizes)))  # every value NULL: the most tuples
    rows, error, where, value, length, hashed = walk(buf, start, sizes, slots, int((sizes == 0).sum()), capacity)
    if error:
        what = {1: "a tuple with another number of fields", 2: "a value of another size", 3: "the stream ends early"}
        raise CopyFormatError(f"binary COPY stream: {what[int(error)]} at byte {where} (tuple {rows + 1})")
    out: dict[str, Column] = {}
    for c, (name, oid) in enumerate(types.items()):
        null = length[c, :rows] < 0
        if oid in TEXT_TYPES:
            out[name] = _texts(buf, value[c, :rows], length[c, :rows], hashed[slots[c], :rows], null, same, encoding)
        elif oid in (FLOAT4, FLOAT8):
            bits = value[c, :rows]
            numbers = (
                bits.view(np.float64) if oid == FLOAT8 else bits.astype(np.int32).view(np.float32).astype(np.float64)
            )
            out[name] = np.where(null, np.nan, numbers) if null.any() else numbers.copy()
        elif oid == BOOL:
            flags = value[c, :rows] != 0
            if null.any():
                column = flags.astype(object)
                column[null] = None
                out[name] = column
            else:
                out[name] = flags
        else:
            out[name] = np.where(null, np.nan, value[c, :rows]) if null.any() else value[c, :rows].copy()
    return out


def _texts(
    buf: np.ndarray[Any, np.dtype[np.uint8]],
    starts: np.ndarray[Any, np.dtype[np.int64]],
    lengths: np.ndarray[Any, np.dtype[np.int32]],
    hashed: np.ndarray[Any, np.dtype[np.uint64]],
    null: np.ndarray[Any, np.dtype[np.bool_]],
    same: Any,
    encoding: str,
) -> Column:
    """Text values as str objects, each distinct value decoded once (a category column holds a
    handful): rows are grouped by the hash of their bytes, then checked byte for byte."""
    import pandas as pd  # here: most users of this module never decode text

    out = np.full(len(null), None, dtype=object)
    some_null = bool(null.any())
    present = np.flatnonzero(~null) if some_null else slice(None)
    if some_null:
        starts, lengths, hashed = starts[present], lengths[present], hashed[present]
    if not len(starts):
        return out
    codes = np.asarray(pd.factorize(hashed)[0], dtype=np.int64)  # numbered by first appearance
    first = np.flatnonzero(np.r_[True, codes[1:] > np.maximum.accumulate(codes)[:-1]]).astype(np.int64)
    if not same(buf, starts, lengths, first, codes):  # a hash collision: decode row by row
        pieces = zip(starts.tolist(), lengths.tolist(), strict=True)
        out[present] = [bytes(buf[a : a + n]).decode(encoding) for a, n in pieces]
        return out
    words = np.empty(len(first), dtype=object)
    words[:] = [bytes(buf[starts[i] : starts[i] + lengths[i]]).decode(encoding) for i in first.tolist()]
    if not some_null:
        return words[codes]
    out[present] = words[codes]
    return out


def read_binary(cur: PgCursor, query: sql.Composable | str) -> memoryview:
    """The raw stream of `COPY (query) TO STDOUT (FORMAT binary)` (for `decode_binary`)."""
    text = query.as_string(cur) if isinstance(query, sql.Composable) else query
    buffer = io.BytesIO()
    cur.copy_expert(f"COPY ({text}) TO STDOUT (FORMAT binary)", buffer)
    return buffer.getbuffer()


def client_encoding(cur: PgCursor) -> str:
    """The Python codec of the connection's client_encoding (text in a COPY stream is in it)."""
    return str(extensions.encodings.get(cur.connection.encoding, "utf-8"))


def copy_out(cur: PgCursor, query: sql.Composable | str, types: Mapping[str, int] | None = None) -> dict[str, Column]:
    """The rows of `query` (a SELECT) as NumPy columns (`decode_binary`), read with
    `COPY (query) TO STDOUT (FORMAT binary)`. `types` (from `describe`) saves a round trip."""
    columns = dict(types) if types is not None else describe(cur, query)
    return decode_binary(read_binary(cur, query), columns, client_encoding(cur))


@dataclass(frozen=True)
class CopyColumn:
    """One column for `copy_in`: its PostgreSQL type (bool, int2, int4, int8, float8, date,
    text), its values (an array with one per row, or one value for every row) and which rows
    are NULL (None: none). Text takes one value for every row."""

    type: str
    values: Any
    null: np.ndarray[Any, np.dtype[np.bool_]] | None = None


_WIRE = {"bool": "u1", "int2": ">i2", "int4": ">i4", "int8": ">i8", "float8": ">f8", "date": ">i4"}


def _wire_values(column: CopyColumn, name: str, rows: int, encoding: str) -> tuple[np.dtype[Any], Any, bool]:
    """The value's wire dtype, its value(s) ready to assign, and whether it is one for every row."""
    values = column.values
    constant = np.ndim(values) == 0
    if column.type == "text":
        if not constant:
            raise ValueError(f"column {name}: text takes one value for every row")
        raw = str(values).encode(encoding)
        return np.dtype(f"S{len(raw)}"), raw, True
    if column.type not in _WIRE:
        raise ValueError(f"column {name}: type {column.type!r} is not one of {', '.join([*_WIRE, 'text'])}")
    if not constant and len(values) != rows:
        raise ValueError(f"column {name}: {len(values)} values for {rows} rows")
    if column.type == "date":
        days = (np.asarray(values, dtype="datetime64[D]") - _EPOCH).astype(np.int64)
        values = days if not constant else int(days)
    elif column.type == "bool":
        values = np.asarray(values, dtype=bool).astype(np.uint8) if not constant else int(bool(values))
    return np.dtype(_WIRE[column.type]), values, constant


def encode_binary(
    columns: Mapping[str, CopyColumn], rows: int, encoding: str = "utf-8"
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """`rows` rows of `columns` as a binary COPY stream (bytes, for `COPY table (columns) FROM
    STDIN (FORMAT binary)`). Rows that share their NULLs are laid out at once: a template row
    (the field count, each length and every constant) copied over a structured array, then
    one assignment per column that varies. Rows come out grouped by which columns are NULL,
    in order within each group (all together, in order, when no column has a NULL)."""
    wire = {name: _wire_values(column, name, rows, encoding) for name, column in columns.items()}
    nulls = {name: np.asarray(c.null, dtype=bool) for name, c in columns.items() if c.null is not None}
    for name, mask in nulls.items():
        if mask.shape != (rows,):
            raise ValueError(f"column {name}: a NULL mask of shape {mask.shape} for {rows} rows")
    pattern = np.zeros(rows, dtype=np.int64)
    for bit, mask in enumerate(nulls.values()):
        pattern |= mask.astype(np.int64) << bit
    groups = []
    for key in np.unique(pattern).tolist() if rows else []:
        null_here = {name for bit, name in enumerate(nulls) if key >> bit & 1}
        fields: list[tuple[str, Any]] = [("count", ">i2")]
        for i, (name, (dtype, _, _)) in enumerate(wire.items()):
            fields.append((f"length{i}", ">i4"))
            if name not in null_here:
                fields.append((f"value{i}", dtype))
        template = np.zeros(1, dtype=np.dtype(fields))
        template["count"] = len(columns)
        for i, (name, (dtype, values, constant)) in enumerate(wire.items()):
            template[f"length{i}"] = -1 if name in null_here else dtype.itemsize
            if constant and name not in null_here:
                template[f"value{i}"] = values
        pick = np.flatnonzero(pattern == key) if len(nulls) and np.any(pattern != key) else None
        groups.append((template, null_here, pick))
    size = len(_HEADER) + sum(t.itemsize * (rows if k is None else len(k)) for t, _, k in groups) + len(_TRAILER)
    out = np.empty(size, dtype=np.uint8)
    out[: len(_HEADER)] = np.frombuffer(_HEADER, dtype=np.uint8)
    at = len(_HEADER)
    for template, null_here, pick in groups:
        count = rows if pick is None else len(pick)
        raw = out[at : at + count * template.itemsize].reshape(count, template.itemsize)
        raw[:] = template.view(np.uint8)
        block = raw.reshape(-1).view(template.dtype)
        for i, (name, (_, values, constant)) in enumerate(wire.items()):
            if not constant and name not in null_here:
                block[f"value{i}"] = values if pick is None else np.asarray(values)[pick]
        at += count * template.itemsize
    out[at:] = np.frombuffer(_TRAILER, dtype=np.uint8)
    return out


class _Reader:
    """A file-like view of a buffer for `copy_expert` (which reads it a block at a time)."""

    def __init__(self, data: np.ndarray[Any, np.dtype[np.uint8]]) -> None:
        self._view, self._at = memoryview(data.data).cast("B"), 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(self._at + size, len(self._view))
        chunk = bytes(self._view[self._at : end])
        self._at = end
        return chunk

    def readline(self, size: int = -1) -> bytes:  # part of the file protocol; COPY reads blocks
        return self.read(size)


def write_binary(cur: PgCursor, table: str, names: Sequence[str], data: np.ndarray[Any, np.dtype[np.uint8]]) -> int:
    """`COPY table (names) FROM STDIN (FORMAT binary)` of a stream from `encode_binary`, in the
    cursor's transaction; returns the rows written."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    cur.copy_expert(statement.as_string(cur), _Reader(data), size=1 << 20)
    return int(cur.rowcount)


def copy_in(cur: PgCursor, table: str, columns: Mapping[str, CopyColumn], rows: int) -> int:
    """Write `rows` rows of `columns` into `table` with `COPY ... FROM STDIN (FORMAT binary)`,
    in the cursor's transaction; returns the rows written."""
    return write_binary(cur, table, list(columns), encode_binary(columns, rows, client_encoding(cur)))
