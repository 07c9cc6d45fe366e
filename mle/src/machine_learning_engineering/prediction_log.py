"""The prediction log's writer: acknowledged means recorded, or the loss is counted and visible.

Two kinds of record: a one-row request is a `PredictionRecord`, one row of `predictions`; a
request of more rows is one `BatchRecord`, one row of `prediction_batches` holding its values as
arrays (PostgreSQL's cost is per stored row: 10-15 µs of server CPU a `predictions` row, which
capped logged batches at ~58 k rows/s). The view `prediction_log` shows both, one row per
prediction (bootstrap/95-prediction-batches.sql).

`log()` only appends to an in-memory buffer; a background thread writes batches as
`mle_user`. Everything below counts predictions (rows), whichever kind carries them: a
10,000-row batch record is 10,000 rows of buffer. What can happen to a record, and where it is
counted (`stats()`, `/metrics`):
- written: the normal case. Each record carries a client-made UUID (a batch record one for the
  whole request), unique in its table, and a write meeting ids already stored is inserted
  `ON CONFLICT DO NOTHING` (see Cost), so a write retried after an ambiguous failure lands once;
- dead-lettered: the database refused the record itself (a value a column cannot hold). A
  refused batch is split in halves until the offending records are alone; they go to
  `prediction_dead_letters` with the error, everything else is written;
- spooled: the database is away when the process stops, or the buffer overflows during a long
  outage (or stays full for `backpressure` seconds while the database takes writes: until
  then `log()` waits for room, so overload slows answers rather than filling the spool). The
  records go to a local file (written atomically) and are replayed, by whichever process of the
  API finds the file first, once the database takes writes again; ids make the replay land
  exactly once even if a replay is interrupted and repeated;
- dropped: only when neither the database nor the spool can take a record (no spool
  directory, full disk). Logged as an ERROR with the count.
While the database cannot be written, the thread retries with capped backoff, says so at
ERROR when the outage starts and again every minute, and `health()` reports it.

Cost: a one-row record is a tuple of ready text (`PredictionRecord.from_columns`), and a batch
of them goes to the database as COPY text straight into `predictions`. A batch record keeps the
request's NumPy columns and its features as one JSON object of arrays (orjson, vectorised, no
per-row Python) and goes in by binary COPY, its arrays built by NumPy (`batch_copy_binary`).
Only when a COPY meets an id already stored (a retry, a replayed spool file) does the write go
the careful way: into a staging table, then `INSERT ... ON CONFLICT DO NOTHING`. The figures
(client and server CPU per prediction, per kind and format) are in
docs/serving.md#the-prediction-log.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import math
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import orjson
import pandas as pd
import psycopg2

from machine_learning_engineering import metrics
from machine_learning_engineering.config import DatabaseSettings, PredictionLogSettings
from machine_learning_engineering.db import connect_once, first_line
from machine_learning_engineering.ood import Verdict

log = logging.getLogger(__name__)

# Batches arrive by COPY (text format: cheaper to build and to parse than CSV) straight into
# `predictions`. A batch holding a prediction id that is stored already (retried after an
# ambiguous failure, or replayed from the spool) makes that COPY fail as a whole; it then goes
# into a per-connection staging table and on with one INSERT, whose ON CONFLICT lands each id
# once. (Staging every batch costs the database half as much again per record.)
COLUMNS = (
    "prediction_id, client_idx, label, probability, model_version, features, api_key, predicted_at, "
    "in_distribution, ood_reasons"
)
DIRECT_COPY = f"COPY predictions ({COLUMNS}) FROM STDIN"
STAGE = """
CREATE TEMP TABLE IF NOT EXISTS incoming_predictions (
    prediction_id uuid, client_idx bigint, label smallint, probability double precision,
    model_version text, features jsonb, api_key text, predicted_at timestamptz,
    in_distribution boolean, ood_reasons jsonb
) ON COMMIT DELETE ROWS
"""
COPY = "COPY incoming_predictions FROM STDIN"
INSERT = """
INSERT INTO predictions (prediction_id, client_idx, label, probability, model_version, features, api_key, predicted_at,
                         in_distribution, ood_reasons)
SELECT prediction_id, client_idx, label, probability, model_version, features, api_key, predicted_at,
       in_distribution, ood_reasons
FROM incoming_predictions
ON CONFLICT DO NOTHING
"""
# Batch records: binary COPY (the arrays built by NumPy, parsed by PostgreSQL without text
# conversions), staged the same way when a batch_id is stored already.
BATCH_COLUMNS = (
    "batch_id, model_version, api_key, predicted_at, rows, client_idx, label, probability, in_distribution, "
    "features, ood_reasons"
)
BATCH_DIRECT_COPY = f"COPY prediction_batches ({BATCH_COLUMNS}) FROM STDIN (FORMAT binary)"
BATCH_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS incoming_prediction_batches (
    batch_id uuid, model_version text, api_key text, predicted_at timestamptz, rows integer,
    client_idx bigint[], label smallint[], probability double precision[], in_distribution boolean[],
    features jsonb, ood_reasons jsonb
) ON COMMIT DELETE ROWS
"""
BATCH_COPY = "COPY incoming_prediction_batches FROM STDIN (FORMAT binary)"
BATCH_INSERT = f"""
INSERT INTO prediction_batches ({BATCH_COLUMNS})
SELECT {BATCH_COLUMNS} FROM incoming_prediction_batches
ON CONFLICT DO NOTHING
"""
DEAD_LETTER = """
INSERT INTO prediction_dead_letters (prediction_id, record, error) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING
"""
# Can this login append to the log at all? (A wrong grant shows before the first request does.)
# And does the table have the columns this writer fills (a database made before 70-ood.sql)?
# And the tables added later (has_table_privilege of a NULL regclass is NULL: absent, not refused)?
PROBE = """
SELECT has_table_privilege('predictions', 'INSERT') AND has_table_privilege('prediction_dead_letters', 'INSERT')
       AND coalesce(bool_and(has_table_privilege(to_regclass(t), 'INSERT')), true),
       ARRAY(SELECT c FROM unnest(%s::text[]) AS c
             WHERE NOT EXISTS (SELECT FROM pg_attribute
                               WHERE attrelid = 'predictions'::regclass AND attname = c AND NOT attisdropped)),
       array_remove(array_agg(CASE WHEN to_regclass(t) IS NULL THEN t END), NULL)
FROM unnest(%s::text[]) AS t
"""
# Columns and tables added after the log's first release, and the bootstrap file that adds
# them to an existing database.
LATER_COLUMNS = {"in_distribution": "70-ood.sql", "ood_reasons": "70-ood.sql"}
LATER_TABLES = {"prediction_batches": "95-prediction-batches.sql"}

# Errors that belong to the records in a batch, not to the database: split and dead-letter.
# Anything else (connection, authentication, privileges, a missing table) is an outage: keep
# the records and retry.
RECORD_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.DataError,
    psycopg2.IntegrityError,
    UnicodeError,
    ValueError,
)
SPOOL_SUFFIX = ".jsonl"


# Byte maps that set a UUID's version (7) and variant (RFC 9562) bits.
_VERSION_7 = bytes((b & 0x0F) | 0x70 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
# Random bytes are read from the system this many at a time: a system call per request would
# cost more than the rest of its record; here it is one per 6,553 ids.
ENTROPY_BLOCK = 1 << 16


class _Entropy:
    """`os.urandom` in blocks, handed out under a lock. A forked child (a gunicorn worker)
    forgets its parent's block: two processes never hand out the same bytes."""

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._block, self._at = b"", 0

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._at + size > len(self._block):
                self._block, self._at = os.urandom(max(ENTROPY_BLOCK, size)), 0
            start, self._at = self._at, self._at + size
            return self._block[start : self._at]


_ENTROPY = _Entropy()
os.register_at_fork(after_in_child=_ENTROPY.forget)


def _uuid7_hex(n: int) -> list[str]:
    """n version-7 UUIDs as hex (RFC 9562: the Unix time in milliseconds, then 74 random bits).

    Time-ordered ids land at the right edge of the table's unique index instead of at random
    places in it: with 1.5 million rows logged, PostgreSQL spends 10-12 µs of CPU per record
    instead of 18 with random (version-4) ids, and the gap widens as the table grows."""
    milliseconds = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    random = _ENTROPY.take(10 * n)
    if n == 1:
        one = bytearray(milliseconds + random)
        one[6], one[8] = _VERSION_7[one[6]], _VARIANT[one[8]]
        return [one.hex()]
    raw = bytearray(16 * n)
    for i in range(6):
        raw[i::16] = milliseconds[i : i + 1] * n
    for i in range(10):
        raw[6 + i :: 16] = random[i::10]
    raw[6::16] = raw[6::16].translate(_VERSION_7)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    text = raw.hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


def _first_line(exc: BaseException) -> str:
    """ASCII, so that the dead-letter table can always store it."""
    return first_line(exc).encode("ascii", "backslashreplace").decode()


class LogUnwritable(RuntimeError):
    """The database answers, but this login cannot append to the prediction log."""


# COPY text: a value's backslashes, tabs and line ends are escaped; \N is NULL.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"
_BOOLEAN = {True: "t", False: "f", None: _NULL}


def _escaped(text: str) -> str:
    return text.translate(_ESCAPES) if ("\\" in text or "\t" in text or "\n" in text or "\r" in text) else text


def _text(value: str | None) -> str:
    return _NULL if value is None else _escaped(value)


def copy_text(batch: Sequence[PredictionRecord]) -> bytes:
    """The records as COPY text in `COLUMNS` order, built column by column. Encoded here, not by
    psycopg2 mid-COPY: a string UTF-8 cannot hold is then the record's fault (UnicodeEncodeError),
    not a cancelled statement that looks like an outage."""
    if not batch:
        return b""
    ids, idx, labels, probabilities, versions, features, keys, times, flags, reasons = zip(*batch, strict=True)
    same: dict[str | None, str] = {}  # version, key and time repeat across a batch: escape each once

    def repeated(value: str | None) -> str:
        text = same.get(value)
        if text is None:
            text = same[value] = _text(value)
        return text

    columns = (
        ids,
        map(str, idx),
        map(str, labels),
        [_NULL if p is None else repr(p) for p in probabilities],
        map(repeated, versions),
        map(_text, features),
        map(repeated, keys),
        map(repeated, times),
        map(_BOOLEAN.__getitem__, flags),
        map(_text, reasons),
    )
    return ("\n".join(map("\t".join, zip(*columns, strict=True))) + "\n").encode("utf-8")


def _integers(values: Any) -> list[int]:
    """Python ints from an integer array (one C call) or any sequence of whole numbers."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        out: list[int] = values.tolist()
        return out
    return list(map(int, values))


def features_json(columns: Mapping[str, Any], kinds: Mapping[str, str]) -> list[str]:
    """Per row of validated columns (`model.Columns`), its features as JSON text, built column
    by column: whole numbers of integer features as integers, other numbers as Python writes
    them (exact), categories as sent, a missing value (NaN, None) as null."""
    names = tuple(kinds)
    if not names:
        return []
    template = _json_template(names)
    if len(columns[names[0]]) == 1:  # a /predict: no lists to build
        return [template % tuple(_json_value(columns[name][0], kinds[name]) for name in names)]
    rendered = [_json_column(columns[name], kinds[name]) for name in names]
    return list(map(template.__mod__, zip(*rendered, strict=True)))


_second: tuple[int, str] = (0, "")


def _now() -> str:
    """`datetime.now(UTC).isoformat()`, a third of its cost: the date and time of day are
    formatted once a second (a /predict pays this on every request)."""
    global _second
    t = time.time_ns() // 1000
    second, micro = divmod(t, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micro:06d}+00:00"


def _one_row_json(names: tuple[str, ...], columns: Mapping[str, Any], kinds: Mapping[str, str]) -> str:
    """`features_json` of a one-row request, by one orjson call (a third of the cost of rendering
    each value): whole numbers of integer features as integers, NaN and infinities as null."""
    row: dict[str, Any] = {}
    for name in names:
        value = columns[name][0]
        if kinds[name] == "integer":
            number = float(value)
            row[name] = int(number) if number.is_integer() and -(2.0**63) < number < 2.0**63 else number
        else:
            row[name] = value
    try:
        return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # text orjson refuses (a lone surrogate): the database will refuse it by name
        return _json_template(names) % tuple([_JSON_VALUE[kinds[name]](columns[name][0]) for name in names])


def _json_float(value: Any) -> str:
    number = float(value)
    return repr(number) if math.isfinite(number) else "null"


def _json_value(value: Any, kind: str) -> str:
    if kind == "category":
        return _json_category(value)
    number = float(value)
    if kind == "integer":
        return _json_integer(number)
    return repr(number) if math.isfinite(number) else "null"


@lru_cache(maxsize=64)
def _json_template(names: tuple[str, ...]) -> str:
    """`{"a":%s,"b":%s}` for the names: a row's JSON once its values are rendered."""
    return "{" + ",".join(f"{json.dumps(name).replace('%', '%%')}:%s" for name in names) + "}"


def _json_column(values: Any, kind: str) -> list[str]:
    if kind == "category":
        return list(map(_json_category, values))
    numbers: list[float] = values.tolist() if hasattr(values, "tolist") else list(values)
    if kind == "integer":
        return [_json_integer(v) for v in numbers]
    return [repr(float(v)) if math.isfinite(v) else "null" for v in numbers]


def _json_integer(value: float) -> str:
    if not math.isfinite(value):
        return "null"
    return str(int(value)) if value.is_integer() and abs(value) < 2**63 else repr(float(value))


def _json_category(value: Any) -> str:
    if value is None or value != value:  # None, or NaN as a frame holds a missing category
        return "null"
    return _json_text(value)


@lru_cache(maxsize=4096)
def _json_text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


class _KindValues(dict[str, Any]):
    """Per feature kind, one value's JSON; a kind with no entry is a number (as `_json_value`)."""

    def __missing__(self, kind: str) -> Any:
        return _json_float


_JSON_VALUE = _KindValues(category=_json_category, integer=lambda value: _json_integer(float(value)))


@lru_cache(maxsize=1024)
def _reasons_json(verdict: Verdict) -> str:
    return json.dumps(verdict.reasons, ensure_ascii=False) if verdict.findings else "[]"


class PredictionRecord(NamedTuple):
    """One logged prediction, in the column order of the `predictions` table.

    `features` is the row's JSON text (NaN as null) and `predicted_at` ISO 8601 text: the
    writer streams records to COPY as they are. `prediction_id` is made here, by the client,
    so a batch written twice after an ambiguous failure is stored once. `api_key` names the
    key that asked (None for an open API). `in_distribution` is the out-of-distribution
    gate's verdict (None: the version has no gate) and `ood_reasons` its reasons as JSON text;
    both default to None, so spool files written before they existed replay unchanged.
    """

    prediction_id: str
    client_idx: int
    label: int
    probability: float | None
    model_version: str
    features: str
    api_key: str | None
    predicted_at: str
    in_distribution: bool | None = None
    ood_reasons: str | None = None

    @classmethod
    def batch(
        cls,
        idx: Sequence[Any] | np.ndarray,
        labels: np.ndarray,
        probabilities: np.ndarray | None,
        version: str,
        features: pd.DataFrame | Sequence[str],
        api_key: str | None = None,
        verdicts: Sequence[Verdict] | None = None,
    ) -> list[PredictionRecord]:
        """Records for scored rows, built column-wise (this runs on every request): `features`
        is each row's JSON text (`features_json`), or a frame (written by pandas, NaN as null)."""
        if isinstance(features, pd.DataFrame):
            n = len(features)
            rows = features.to_json(orient="records", lines=True, double_precision=15).splitlines() if n else []
        else:
            rows, n = list(features), len(features)
        if not len(idx) == len(labels) == n:
            raise ValueError(f"{len(idx)} client idx and {len(labels)} labels for {n} feature rows")
        ids, now = _uuid7_hex(n), datetime.now(UTC).isoformat()
        if n == 1 and verdicts is not None:  # a /predict: one record, no columns to zip
            verdict = verdicts[0]
            probability = None if probabilities is None else float(probabilities[0])
            flag, reason = verdict.in_distribution, _reasons_json(verdict)
            return [cls(ids[0], int(idx[0]), int(labels[0]), probability, version, rows[0], api_key, now, flag, reason)]
        clients = _integers(idx)
        labels_ = _integers(labels)
        probabilities_ = repeat(None) if probabilities is None else np.asarray(probabilities, dtype=float).tolist()
        flags: Any = repeat(None)
        reasons: Any = repeat(None)
        if verdicts is not None:
            flags = [v.in_distribution for v in verdicts]
            reasons = map(_reasons_json, verdicts)
        fields = zip(
            ids, clients, labels_, probabilities_, repeat(version), rows, repeat(api_key), repeat(now), flags, reasons
        )
        return list(map(cls._make, fields))

    @classmethod
    def from_columns(
        cls,
        idx: Sequence[Any] | np.ndarray,
        labels: np.ndarray,
        probabilities: np.ndarray | None,
        version: str,
        columns: Mapping[str, Any],
        kinds: Mapping[str, str],
        api_key: str | None = None,
        verdicts: Sequence[Verdict] | None = None,
    ) -> list[PredictionRecord]:
        """`batch` for validated columns: the features of `kinds` as JSON (`features_json`). One
        row (every /predict) takes a straight path: no lists, no zips."""
        if len(labels) == 1 and verdicts is not None and len(idx) == 1:
            names = tuple(kinds)
            if names and len(columns[names[0]]) == 1:
                verdict = verdicts[0]
                return [
                    cls(
                        _uuid7_hex(1)[0],
                        int(idx[0]),
                        int(labels[0]),
                        None if probabilities is None else float(probabilities[0]),
                        version,
                        _one_row_json(names, columns, kinds),
                        api_key,
                        _now(),
                        verdict[0],
                        _reasons_json(verdict),
                    )
                ]
        return cls.batch(idx, labels, probabilities, version, features_json(columns, kinds), api_key, verdicts)

    @property
    def rows(self) -> int:
        """Predictions this record carries (a `BatchRecord` carries many)."""
        return 1

    @property
    def record_id(self) -> str:
        return self.prediction_id

    def dumps(self) -> str:
        """One ASCII JSON line: lossless for any string, even one the database would refuse."""
        return json.dumps(list(self), ensure_ascii=True)

    @classmethod
    def loads(cls, line: str) -> PredictionRecord:
        return cls(*json.loads(line))


class BatchRecord(NamedTuple):
    """A logged request of more than one row: one row of `prediction_batches`.

    The per-prediction values stay NumPy arrays (client_idx int64, label int64, probability
    float64; in_distribution a bool array, or a list when some rows have no verdict), encoded
    for the database by `batch_copy_binary` in the writer thread. `features` is the JSON text of
    an object of arrays, one per feature; `ood_reasons` the JSON text of the sparse object
    {"<1-based row>": [reasons], ...} of the rows with reasons (None: no verdicts were given).
    `batch_id` is made here, by the client, so a write repeated after an ambiguous failure lands
    once. Built by `from_columns`; the request that made it must not change its arrays after.
    """

    batch_id: str
    model_version: str
    api_key: str | None
    predicted_at: str
    rows: int
    client_idx: np.ndarray
    label: np.ndarray
    probability: np.ndarray | None
    in_distribution: Any
    features: str
    ood_reasons: str | None

    @classmethod
    def from_columns(
        cls,
        idx: Sequence[Any] | np.ndarray,
        labels: np.ndarray,
        probabilities: np.ndarray | None,
        version: str,
        columns: Mapping[str, Any],
        kinds: Mapping[str, str],
        api_key: str | None = None,
        verdicts: Sequence[Verdict] | None = None,
    ) -> BatchRecord:
        """The record of a scored request, column-wise: no Python per row but the verdicts' walk."""
        n = len(labels)
        feature_rows = len(columns[next(iter(kinds))]) if kinds else n
        if not len(idx) == n == feature_rows or n == 0:
            raise ValueError(f"{len(idx)} client idx and {n} labels for {feature_rows} feature rows")
        if verdicts is not None and len(verdicts) != n:
            raise ValueError(f"{len(verdicts)} verdicts for {n} rows")
        clients = _int64_or_objects(idx)
        flags: Any = None
        reasons = None
        if verdicts is not None:
            values = [v[0] for v in verdicts]
            if None not in values:
                flags = np.array(values, dtype=bool)
            elif any(v is not None for v in values):
                flags = values
            reasons = "{" + ",".join(f'"{i}":{_reasons_json(v)}' for i, v in enumerate(verdicts, 1) if v[1]) + "}"
        return cls(
            _uuid7_hex(1)[0],
            version,
            api_key,
            _now(),
            n,
            clients,
            np.array(labels, dtype=np.int64),
            None if probabilities is None else np.array(probabilities, dtype=np.float64),
            flags,
            features_columns_json(columns, kinds),
            reasons,
        )

    @property
    def record_id(self) -> str:
        return self.batch_id

    def dumps(self) -> str:
        """One ASCII JSON line (an object, where a `PredictionRecord` is a list): lossless."""
        flags = self.in_distribution
        return json.dumps(
            {
                "batch_id": self.batch_id,
                "model_version": self.model_version,
                "api_key": self.api_key,
                "predicted_at": self.predicted_at,
                "rows": self.rows,
                "client_idx": self.client_idx.tolist(),
                "label": self.label.tolist(),
                "probability": None if self.probability is None else self.probability.tolist(),
                "in_distribution": flags.tolist() if isinstance(flags, np.ndarray) else flags,
                "features": self.features,
                "ood_reasons": self.ood_reasons,
            },
            ensure_ascii=True,
        )

    @classmethod
    def loads(cls, line: str) -> BatchRecord:
        data = json.loads(line)
        flags = data["in_distribution"]
        return cls(
            data["batch_id"],
            data["model_version"],
            data["api_key"],
            data["predicted_at"],
            int(data["rows"]),
            _int64_or_objects(data["client_idx"]),
            np.array(data["label"], dtype=np.int64),
            None if data["probability"] is None else np.array(data["probability"], dtype=np.float64),
            np.array(flags, dtype=bool) if flags is not None and None not in flags else flags,
            data["features"],
            data["ood_reasons"],
        )


LogRecord = PredictionRecord | BatchRecord


def loads(line: str) -> LogRecord:
    """A spooled or dead-lettered record of either kind (a batch record is a JSON object)."""
    return BatchRecord.loads(line) if line.lstrip().startswith("{") else PredictionRecord.loads(line)


def records_for(
    idx: Sequence[Any] | np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray | None,
    version: str,
    columns: Mapping[str, Any],
    kinds: Mapping[str, str],
    api_key: str | None = None,
    verdicts: Sequence[Verdict] | None = None,
) -> list[LogRecord]:
    """What one scored request is logged as: one row, a `PredictionRecord` (a row of
    `predictions`); more, one `BatchRecord` (a row of `prediction_batches`)."""
    if len(labels) == 1:
        return [
            PredictionRecord.from_columns(idx, labels, probabilities, version, columns, kinds, api_key, verdicts)[0]
        ]
    return [BatchRecord.from_columns(idx, labels, probabilities, version, columns, kinds, api_key, verdicts)]


def _int64_or_objects(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Client idx as int64, or as they are where int64 cannot hold them: the database refuses
    those and the record goes to the dead letters whole."""
    try:
        return np.array(values, dtype=np.int64)
    except (OverflowError, TypeError, ValueError):
        return np.array(list(values), dtype=object)


def features_columns_json(columns: Mapping[str, Any], kinds: Mapping[str, str]) -> str:
    """Validated columns (`model.Columns`) as one JSON object of arrays, one per feature of
    `kinds`, by orjson on whole arrays: the values as `features_json` writes them for one row
    (whole numbers of integer features as integers, missing as null)."""
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        values = columns[name]
        if kind == "category":
            out[name] = values.tolist() if isinstance(values, np.ndarray) else list(values)
            continue
        numbers = np.asarray(values, dtype=np.float64)
        if kind == "integer":
            whole = np.isfinite(numbers) & (numbers == np.trunc(numbers)) & (np.abs(numbers) < 2.0**63)
            if whole.all():
                out[name] = numbers.astype(np.int64)
            else:  # missing or fractional values among whole ones: rare, per value
                out[name] = [int(v) if w else v for v, w in zip(numbers.tolist(), whole.tolist(), strict=True)]
        else:
            out[name] = numbers
    try:
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # text orjson refuses (a lone surrogate): the database will refuse it by name
        plain = {
            k: [
                None if v != v or v in (math.inf, -math.inf) else v
                for v in (vs.tolist() if isinstance(vs, np.ndarray) else vs)
            ]
            for k, vs in out.items()
        }
        return json.dumps(plain, ensure_ascii=False)


# Binary COPY (PostgreSQL's COPY BINARY format): a header, per tuple the field count then each
# field as a 32-bit length (-1: NULL) and its bytes, then a trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_BATCH_FIELDS = struct.pack(">h", 11)
_NULL_FIELD = struct.pack(">i", -1)
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
# Element types of the arrays (pg_type oids) and their binary element layout: length, value.
_INT8, _INT2, _FLOAT8, _BOOL = 20, 21, 701, 16
_ELEMENTS = {
    _INT8: np.dtype([("length", ">i4"), ("value", ">i8")]),
    _INT2: np.dtype([("length", ">i4"), ("value", ">i2")]),
    _FLOAT8: np.dtype([("length", ">i4"), ("value", ">f8")]),
    _BOOL: np.dtype([("length", ">i4"), ("value", "u1")]),
}


def _field(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def _array(values: Any, oid: int) -> bytes:
    """A one-dimensional array field, its elements laid out by NumPy in one pass."""
    n = len(values)
    if isinstance(values, np.ndarray) and values.dtype != object:
        layout = _ELEMENTS[oid]
        elements = np.empty(n, dtype=layout)
        elements["length"] = layout["value"].itemsize
        if oid == _INT2 and n and (values.min() < -(2**15) or values.max() >= 2**15):
            raise ValueError(f"a label outside smallint: {values.min()}..{values.max()}")
        elements["value"] = values
        body, has_null = elements.tobytes(), 0
    else:  # elements that may be NULL (a bool list holding None) or out of range: one by one
        chunks = []
        for value in values:
            if value is None:
                chunks.append(_NULL_FIELD)
            elif oid == _BOOL:
                chunks.append(b"\x00\x00\x00\x01" + (b"\x01" if value else b"\x00"))
            else:
                try:
                    chunks.append(struct.pack(">iq", 8, value))
                except struct.error as exc:
                    raise ValueError(f"{value!r} does not fit a bigint") from exc
        body, has_null = b"".join(chunks), int(any(value is None for value in values))
    return _field(struct.pack(">iiiii", 1, has_null, oid, n, 1) + body)


def _timestamp(iso: str) -> bytes:
    """timestamptz: microseconds since 2000-01-01 UTC."""
    delta = datetime.fromisoformat(iso) - _EPOCH_2000
    return struct.pack(">iq", 8, delta // timedelta(microseconds=1))


def _text_field(value: str | None) -> bytes:
    return _NULL_FIELD if value is None else _field(value.encode("utf-8"))


def _jsonb_field(value: str | None) -> bytes:
    return _NULL_FIELD if value is None else _field(b"\x01" + value.encode("utf-8"))  # jsonb binary: version 1


def batch_copy_binary(batch: Iterable[BatchRecord]) -> bytes:
    """Batch records as binary COPY in `BATCH_COLUMNS` order. Encoded here, not mid-COPY: a
    value the format cannot hold (text UTF-8 cannot hold, a label beyond smallint) is then the
    record's fault (ValueError, UnicodeEncodeError), not a cancelled statement."""
    parts = [_COPY_HEADER]
    for r in batch:
        parts += (
            _BATCH_FIELDS,
            _field(bytes.fromhex(r.batch_id.replace("-", ""))),
            _text_field(r.model_version),
            _text_field(r.api_key),
            _timestamp(r.predicted_at),
            struct.pack(">ii", 4, r.rows),
            _array(r.client_idx, _INT8),
            _array(r.label, _INT2),
            _NULL_FIELD if r.probability is None else _array(r.probability, _FLOAT8),
            _NULL_FIELD if r.in_distribution is None else _array(r.in_distribution, _BOOL),
            _jsonb_field(r.features),
            _jsonb_field(r.ood_reasons),
        )
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _count(records: Iterable[LogRecord]) -> int:
    """Predictions in records of either kind."""
    return sum(r.rows for r in records)


def _chunks(records: list[LogRecord], size: int, rows: int) -> Iterator[list[LogRecord]]:
    """Consecutive runs of up to `size` records and about `rows` predictions (a record is never split)."""
    start, taken = 0, 0
    for i, record in enumerate(records):
        taken += record.rows
        if taken >= rows or i + 1 - start >= size:
            yield records[start : i + 1]
            start, taken = i + 1, 0
    if start < len(records):
        yield records[start:]


class PredictionLogger:
    """Buffered, batched, retrying writer of prediction records (one per process). `capacity`
    counts predictions (a batch record counts its rows); a transaction carries up to
    `batch_size` records and `batch_rows` predictions (at least one record, however large): a
    commit per request would cap logged batches at the commits a second the database makes."""

    _default: ClassVar[PredictionLogger | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        settings: DatabaseSettings,
        capacity: int = 100_000,
        batch_size: int = 1_000,
        batch_rows: int = 100_000,
        max_backoff: float = 30.0,
        linger: float = 0.05,
        spool_dir: Path | None = None,
        probe_every: float = 10.0,
        error_every: float = 60.0,
        unready_after: float = 60.0,
        backpressure: float = 5.0,
    ) -> None:
        self.settings = settings
        self.capacity = capacity
        self.batch_size = batch_size
        self.batch_rows = batch_rows
        self.max_backoff = max_backoff
        self.linger = linger
        self.spool_dir = spool_dir
        self.probe_every = probe_every
        self.error_every = error_every
        self.unready_after = unready_after
        self.backpressure = backpressure
        self._flushing = 0
        self._buffer: deque[LogRecord] = deque()
        self._in_flight: list[LogRecord] = []
        self._rows = self._in_flight_rows = 0  # predictions in _buffer, in _in_flight
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        self._conn: Any = None
        self._spool_due = spool_dir is not None
        self._last_scan = 0.0
        self.written = self.spooled = self.replayed = self.dead_lettered = self.dropped = self.failures = 0
        self._outage_since: float | None = None
        self._last_error: str | None = None
        self._last_error_logged = 0.0

    @classmethod
    def from_settings(cls, settings: PredictionLogSettings) -> PredictionLogger:
        return cls(
            settings.database,
            capacity=settings.capacity,
            spool_dir=settings.spool_dir,
            unready_after=settings.outage_unready_seconds,
        )

    @classmethod
    def default(cls) -> PredictionLogger:
        """The process-wide logger, writing as `mle_user` with settings from the environment."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls.from_settings(PredictionLogSettings.from_env())
            return cls._default

    @classmethod
    def close_default(cls, timeout: float | None = None) -> None:
        """Flush, spool what cannot be written, and stop the process-wide logger (worker shutdown)."""
        with cls._default_lock:
            logger = cls._default
        if logger is not None:
            logger.close(PredictionLogSettings.from_env().shutdown_flush_seconds if timeout is None else timeout)

    # -- the request side -----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer now, so a database it cannot write shows before the first request."""
        with self._cond:
            self._ensure_thread()

    def log(self, records: Sequence[LogRecord]) -> None:
        """Queue records for writing. Never raises for the database, never waits for one that is
        away; while it takes writes but more arrive than it takes (a full buffer), the caller
        waits up to `backpressure` seconds for room, so a server answers at the pace its log
        keeps rather than spooling what it could have written. (The `prediction_log_buffered`
        gauge is set by the writer thread, not here: a metric update per request costs more
        than the rest of this call under gunicorn's multiprocess metrics.)"""
        n = records[0].rows if len(records) == 1 else _count(records)
        with self._cond:
            self._ensure_thread()
            was_empty = not self._buffer
            self._buffer.extend(records)
            self._rows += n
            if was_empty or self._rows >= self.batch_size:  # else the writer is lingering
                self._cond.notify_all()
            if self._rows > self.capacity:
                deadline = time.monotonic() + self.backpressure
                while self._rows > self.capacity and self._outage_since is None and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)  # the writer notifies after each batch
                if self._rows > self.capacity:
                    self._overflow()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written; False if that took longer than `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._buffer or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(min(remaining, 0.05))
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what can be written within `timeout`, spool the rest, stop the writer."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            # The batch in flight may still land: spooling it too is safe, its ids land once.
            leftover = self._in_flight + list(self._buffer)
            self._buffer.clear()
            self._in_flight = []
            self._rows = self._in_flight_rows = 0
            self._cond.notify_all()
        if leftover:
            self._spool_or_drop(leftover, "the database could not be written before shutdown")
        metrics.BUFFERED.set(0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def stats(self) -> dict[str, int | bool]:
        with self._cond:
            return {
                "written": self.written,
                "pending": self._rows + self._in_flight_rows,
                "spooled": self.spooled,
                "replayed": self.replayed,
                "dead_lettered": self.dead_lettered,
                "dropped": self.dropped,
                "failures": self.failures,
                "database_available": self._outage_since is None,
            }

    def health(self) -> dict[str, Any]:
        """For /ready: "ok", "degraded" (buffering through an outage) or "failing" (too long)."""
        with self._cond:
            outage = None if self._outage_since is None else time.monotonic() - self._outage_since
            state = "ok" if outage is None else "failing" if outage >= self.unready_after else "degraded"
            return {
                "state": state,
                "outage_seconds": None if outage is None else round(outage, 1),
                "buffered": self._rows + self._in_flight_rows,
                "last_error": self._last_error if outage is not None else None,
            }

    def _overflow(self) -> None:
        """Move the oldest half of a full buffer to the spool (caller holds the lock)."""
        n = max(self._rows - self.capacity, self.capacity // 2, 1)
        oldest: list[LogRecord] = []
        moved = 0
        while moved < n and self._buffer:
            oldest.append(self._buffer.popleft())
            moved += oldest[-1].rows
        self._rows -= moved
        metrics.BUFFERED.set(self._rows + self._in_flight_rows)
        self._spool_or_drop(oldest, f"the buffer is full ({self.capacity} predictions)")

    # -- the spool ------------------------------------------------------------------------

    def _spool_or_drop(self, records: list[LogRecord], why: str) -> None:
        path = self._spool(records)
        rows = _count(records)
        if path is not None:
            self.spooled += rows
            metrics.SPOOLED.inc(rows)
            self._spool_due = True
            log.warning("prediction log: %s; spooled %d prediction(s) to %s for replay", why, rows, path)
        else:
            self.dropped += rows
            metrics.DROPPED.inc(rows)
            log.error(
                "prediction log: %s and there is no spool (%s): DROPPED %d prediction(s), %d in total",
                why,
                "PREDICTION_SPOOL_DIR unset" if self.spool_dir is None else f"cannot write {self.spool_dir}",
                rows,
                self.dropped,
            )

    def _spool(self, records: list[LogRecord]) -> Path | None:
        """Write records to a new spool file atomically (temp file, fsync, rename); None on failure."""
        if self.spool_dir is None:
            return None
        name = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"
        final, partial = self.spool_dir / f"{name}{SPOOL_SUFFIX}", self.spool_dir / f".{name}.partial"
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            with partial.open("w", encoding="ascii") as f:
                f.writelines(record.dumps() + "\n" for record in records)
                f.flush()
                os.fsync(f.fileno())
            partial.rename(final)
            dir_fd = os.open(self.spool_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            log.error("prediction log: cannot spool to %s: %s", self.spool_dir, exc)
            partial.unlink(missing_ok=True)
            return None
        return final

    def _claimed_spool_files(self) -> Iterator[tuple[Path, list[LogRecord]]]:
        """Spool files this process holds an exclusive lock on, with their records.

        The lock (released by the kernel if the process dies) keeps two workers from
        replaying one file at the same time; a file unlinked by its replayer is skipped.
        """
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return
        for path in sorted(self.spool_dir.glob(f"*{SPOOL_SUFFIX}")):
            try:
                f = path.open("r", encoding="ascii")
            except FileNotFoundError:
                continue
            with f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another worker is replaying it
                if os.fstat(f.fileno()).st_nlink == 0:
                    continue  # replayed and removed while we waited
                records: list[LogRecord] = []
                bad = 0
                for line in f:
                    try:
                        records.append(loads(line))
                    except (ValueError, TypeError, KeyError):
                        bad += 1
                if bad:  # a torn line cannot come from our atomic writes; say so, keep the rest
                    self.dropped += bad
                    metrics.DROPPED.inc(bad)
                    log.error("prediction log: %d unreadable line(s) in spool file %s", bad, path)
                yield path, records

    def _replay_spool(self) -> None:
        """Write every spool file this process can claim; delete each once it is all written."""
        self._spool_due, self._last_scan = False, time.monotonic()
        for path, records in self._claimed_spool_files():
            for chunk in _chunks(records, self.batch_size, self.batch_rows):
                self._write_splitting(chunk)  # an outage raises: file kept
            path.unlink()
            rows = _count(records)
            with self._cond:
                self.replayed += rows
            metrics.REPLAYED.inc(rows)
            log.info("prediction log: replayed %d spooled prediction(s) from %s", rows, path.name)

    # -- the writer thread ----------------------------------------------------------------

    def _ensure_thread(self) -> None:
        # A forked worker (gunicorn) inherits no threads: start one per process.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid, self._conn, self._closed = os.getpid(), None, False
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _take_batch(self, wait: float) -> list[LogRecord] | None:
        """The next batch; [] when `wait` passed with nothing to write; None once closed."""
        with self._cond:
            deadline = time.monotonic() + wait
            while not self._buffer and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            if self._closed:
                return None
            # Linger briefly so one transaction carries many requests' records: written one
            # by one, each record costs a round trip and a commit on the request path's CPU.
            deadline = time.monotonic() + self.linger
            while (
                len(self._buffer) < self.batch_size
                and self._rows < self.batch_size
                and not (self._closed or self._flushing)
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[LogRecord] = []
            rows = 0
            while self._buffer and rows < self.batch_rows and len(taken) < self.batch_size:  # at least one record
                taken.append(self._buffer.popleft())
                rows += taken[-1].rows
            self._in_flight, self._in_flight_rows = taken, rows
            self._rows -= rows
            metrics.BUFFERED.set(self._rows + rows)
            return taken

    def _run(self) -> None:
        backoff, wait = 0.25, 0.0  # probe at once: a wrong password shows before any request
        while True:
            batch = self._take_batch(wait)
            if batch is None:
                return
            try:
                if batch:
                    self._write_splitting(batch)
                else:
                    self._probe()
            except Exception as exc:  # an outage, or a surprise: keep every record and retry
                self._failed(batch, exc)
                if batch:
                    self._pause(backoff)
                wait, backoff = backoff, min(backoff * 2, self.max_backoff)
                continue
            self._succeeded(batch)
            backoff, wait = 0.25, self.probe_every
            if self.spool_dir is not None and (
                self._spool_due or time.monotonic() - self._last_scan >= self.probe_every
            ):
                try:
                    self._replay_spool()
                except Exception as exc:  # the file stays for the next attempt
                    self._failed([], exc)
                    wait = backoff

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._closed:
                self._cond.wait(seconds)

    def _succeeded(self, batch: list[LogRecord]) -> None:
        with self._cond:
            if self._in_flight is batch:  # else close() took it over
                self._in_flight, self._in_flight_rows = [], 0
            if self._outage_since is not None:
                log.warning(
                    "prediction log: database back after %.0f s; writing %d buffered prediction(s)",
                    time.monotonic() - self._outage_since,
                    self._rows + _count(batch),
                )
                self._outage_since, self._last_error = None, None
            pending = self._rows + self._in_flight_rows
            self._cond.notify_all()
        metrics.BUFFERED.set(pending)
        metrics.DATABASE_UP.set(1)

    def _failed(self, batch: list[LogRecord], exc: BaseException) -> None:
        now = time.monotonic()
        with self._cond:
            self.failures += 1
            if self._in_flight is batch and not self._closed:
                self._buffer.extendleft(reversed(batch))  # back in front, in order
                self._rows += self._in_flight_rows
                self._in_flight, self._in_flight_rows = [], 0
            self._last_error = _first_line(exc)
            outage_since = self._outage_since
            started = outage_since is None
            if outage_since is None:
                outage_since = self._outage_since = now
            if started or now - self._last_error_logged >= self.error_every:
                self._last_error_logged = now
                log.error(
                    "prediction log: cannot write to %s for %.0f s (%s: %s); %d prediction(s) buffered, "
                    "%d spooled so far; retrying",
                    self.settings.where,
                    now - outage_since,
                    type(exc).__name__,
                    self._last_error,
                    self._rows,
                    self.spooled,
                    exc_info=not isinstance(exc, psycopg2.Error | LogUnwritable),
                )
            pending = self._rows + self._in_flight_rows
            self._cond.notify_all()
        metrics.BUFFERED.set(pending)
        metrics.WRITE_FAILURES.inc()
        metrics.DATABASE_UP.set(0)

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = connect_once(self.settings, application_name="prediction-log")
        return self._conn

    def _transaction(self, work: Any, *args: Any) -> None:
        conn = self._connection()
        try:
            with conn, conn.cursor() as cur:
                work(cur, *args)
        except (psycopg2.DataError, psycopg2.IntegrityError):
            raise  # the transaction rolled back; the connection is fine
        except BaseException:
            conn.close()  # broken, or in a state we do not know: start afresh
            raise

    def _probe(self) -> None:
        def probe(cur: Any) -> None:
            cur.execute(PROBE, (list(LATER_COLUMNS), list(LATER_TABLES)))
            writable, absent, missing = cur.fetchone()
            if not writable:
                raise LogUnwritable(
                    f"{self.settings.user} may not INSERT into predictions / prediction_batches / "
                    "prediction_dead_letters"
                )
            if absent:
                files = ", ".join(sorted({LATER_COLUMNS[c] for c in absent}))
                raise LogUnwritable(
                    f"predictions lacks the column(s) {', '.join(absent)}: this database predates them; "
                    f"apply the bootstrap file(s) {files} once (docs/monitoring.md)"
                )
            if missing:
                raise LogUnwritable(_missing_tables(missing))

        self._transaction(probe)

    def _write_splitting(self, batch: list[LogRecord]) -> None:
        """Write a batch; a batch the database refuses is halved until the culprits stand alone."""
        try:
            self._transaction(self._copy, batch)
        except RECORD_ERRORS as exc:
            if len(batch) == 1:
                self._dead_letter(batch[0], exc)
                return
            middle = len(batch) // 2
            self._write_splitting(batch[:middle])
            self._write_splitting(batch[middle:])
            return
        rows = _count(batch)
        with self._cond:
            self.written += rows
        metrics.WRITTEN.inc(rows)

    @staticmethod
    def _copy(cur: Any, batch: list[LogRecord]) -> None:
        """One transaction: the one-row records by COPY text into `predictions`, the batch records
        by binary COPY into `prediction_batches`; staged when an id is stored already."""
        singles = [r for r in batch if type(r) is PredictionRecord]
        batches = [r for r in batch if type(r) is BatchRecord]
        text = copy_text(singles) if singles else b""
        binary = batch_copy_binary(batches) if batches else b""
        try:
            try:
                if singles:
                    cur.copy_expert(DIRECT_COPY, io.BytesIO(text))
                if batches:
                    cur.copy_expert(BATCH_DIRECT_COPY, io.BytesIO(binary))
            except psycopg2.errors.UniqueViolation:  # some landed before: each may land only once
                cur.connection.rollback()
                if singles:
                    cur.execute(STAGE)
                    cur.copy_expert(COPY, io.BytesIO(text))
                    cur.execute(INSERT)
                if batches:
                    cur.execute(BATCH_STAGE)
                    cur.copy_expert(BATCH_COPY, io.BytesIO(binary))
                    cur.execute(BATCH_INSERT)
        except psycopg2.errors.UndefinedTable as exc:  # a database made before the table: name the file
            if "prediction_batches" not in str(exc):
                raise
            raise LogUnwritable(_missing_tables(["prediction_batches"])) from None

    def _dead_letter(self, record: LogRecord, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {_first_line(exc)}"
        try:
            self._transaction(lambda cur: cur.execute(DEAD_LETTER, (str(record.record_id), record.dumps(), error)))
        except RECORD_ERRORS as again:  # cannot happen with ASCII text, but never loop on it
            with self._cond:
                self.dropped += record.rows
            metrics.DROPPED.inc(record.rows)
            log.error(
                "prediction log: DROPPED record %s: %s; dead letter refused too: %s",
                record.dumps()[:2000],
                error,
                again,
            )
            return
        with self._cond:
            self.dead_lettered += record.rows
        metrics.DEAD_LETTERED.inc(record.rows)
        what = (
            f"client {str(record.client_idx)[:40]}"
            if isinstance(record, PredictionRecord)
            else f"batch {record.batch_id} ({record.rows} predictions)"
        )
        log.error(
            "prediction log: the database refused the record for %s (%s); kept in prediction_dead_letters", what, error
        )


def _missing_tables(tables: Sequence[str]) -> str:
    files = ", ".join(sorted({LATER_TABLES[t] for t in tables}))
    return (
        f"the table(s) {', '.join(tables)} do not exist: this database predates them; "
        f"apply the bootstrap file(s) {files} once (docs/monitoring.md)"
    )
