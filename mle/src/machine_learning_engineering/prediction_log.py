"""The `predictions` table writer: acknowledged means recorded, or the loss is counted and visible.

`log()` only appends to an in-memory buffer; a background thread writes batches as
`mle_user`. What can happen to a record, and where it is counted (`stats()`, `/metrics`):
- written: the normal case. Each record carries a client-made UUID, unique in the table, and
  a batch meeting ids already stored is inserted `ON CONFLICT DO NOTHING` (see Cost), so a
  batch retried after an ambiguous failure lands once;
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

Cost: a record is built column-wise for a whole request (`PredictionRecord.batch`, the features'
JSON from validated columns by `features_json`, no pandas), and a batch goes to the database as
COPY text, built column-wise too, straight into `predictions`. Only when that COPY meets a
prediction id already stored (a retry, a replayed spool file) does the batch go the careful
way: into a staging table, then `INSERT ... ON CONFLICT DO NOTHING`. The figures (client and
server CPU per record for CSV, text and binary COPY, staged and direct) are in
docs/serving.md#the-prediction-log.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
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
DEAD_LETTER = """
INSERT INTO prediction_dead_letters (prediction_id, record, error) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING
"""
# Can this login append to the log at all? (A wrong grant shows before the first request does.)
# And does the table have the columns this writer fills (a database made before 70-ood.sql)?
PROBE = """
SELECT has_table_privilege('predictions', 'INSERT') AND has_table_privilege('prediction_dead_letters', 'INSERT'),
       ARRAY(SELECT c FROM unnest(%s::text[]) AS c
             WHERE NOT EXISTS (SELECT FROM pg_attribute
                               WHERE attrelid = 'predictions'::regclass AND attname = c AND NOT attisdropped))
"""
# Columns added after the table's first release, and the bootstrap file that adds them to an
# existing database.
LATER_COLUMNS = {"in_distribution": "70-ood.sql", "ood_reasons": "70-ood.sql"}

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
        idx: Sequence[Any],
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
        idx: Sequence[Any],
        labels: np.ndarray,
        probabilities: np.ndarray | None,
        version: str,
        columns: Mapping[str, Any],
        kinds: Mapping[str, str],
        api_key: str | None = None,
        verdicts: Sequence[Verdict] | None = None,
    ) -> list[PredictionRecord]:
        """`batch` for validated columns: the features of `kinds` as JSON (`features_json`)."""
        return cls.batch(idx, labels, probabilities, version, features_json(columns, kinds), api_key, verdicts)

    def dumps(self) -> str:
        """One ASCII JSON line: lossless for any string, even one the database would refuse."""
        return json.dumps(list(self), ensure_ascii=True)

    @classmethod
    def loads(cls, line: str) -> PredictionRecord:
        return cls(*json.loads(line))


class PredictionLogger:
    """Buffered, batched, retrying writer of prediction records (one per process)."""

    _default: ClassVar[PredictionLogger | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        settings: DatabaseSettings,
        capacity: int = 100_000,
        batch_size: int = 1_000,
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
        self.max_backoff = max_backoff
        self.linger = linger
        self.spool_dir = spool_dir
        self.probe_every = probe_every
        self.error_every = error_every
        self.unready_after = unready_after
        self.backpressure = backpressure
        self._flushing = 0
        self._buffer: deque[PredictionRecord] = deque()
        self._in_flight: list[PredictionRecord] = []
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

    def log(self, records: Sequence[PredictionRecord]) -> None:
        """Queue records for writing. Never raises for the database, never waits for one that is
        away; while it takes writes but more arrive than it takes (a full buffer), the caller
        waits up to `backpressure` seconds for room, so a server answers at the pace its log
        keeps rather than spooling what it could have written."""
        with self._cond:
            self._ensure_thread()
            was_empty = not self._buffer
            self._buffer.extend(records)
            metrics.BUFFERED.inc(len(records))
            if was_empty or len(self._buffer) >= self.batch_size:  # else the writer is lingering
                self._cond.notify_all()
            if len(self._buffer) > self.capacity:
                deadline = time.monotonic() + self.backpressure
                while len(self._buffer) > self.capacity and self._outage_since is None and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)  # the writer notifies after each batch
                if len(self._buffer) > self.capacity:
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
            self._cond.notify_all()
        if leftover:
            self._spool_or_drop(leftover, "the database could not be written before shutdown")
        metrics.BUFFERED.dec(len(leftover))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def stats(self) -> dict[str, int | bool]:
        with self._cond:
            return {
                "written": self.written,
                "pending": len(self._buffer) + len(self._in_flight),
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
                "buffered": len(self._buffer) + len(self._in_flight),
                "last_error": self._last_error if outage is not None else None,
            }

    def _overflow(self) -> None:
        """Move the oldest half of a full buffer to the spool (caller holds the lock)."""
        n = max(len(self._buffer) - self.capacity, self.capacity // 2, 1)
        oldest = [self._buffer.popleft() for _ in range(min(n, len(self._buffer)))]
        metrics.BUFFERED.dec(len(oldest))
        self._spool_or_drop(oldest, f"the buffer is full ({self.capacity} records)")

    # -- the spool ------------------------------------------------------------------------

    def _spool_or_drop(self, records: list[PredictionRecord], why: str) -> None:
        path = self._spool(records)
        if path is not None:
            self.spooled += len(records)
            metrics.SPOOLED.inc(len(records))
            self._spool_due = True
            log.warning("prediction log: %s; spooled %d record(s) to %s for replay", why, len(records), path)
        else:
            self.dropped += len(records)
            metrics.DROPPED.inc(len(records))
            log.error(
                "prediction log: %s and there is no spool (%s): DROPPED %d record(s), %d in total",
                why,
                "PREDICTION_SPOOL_DIR unset" if self.spool_dir is None else f"cannot write {self.spool_dir}",
                len(records),
                self.dropped,
            )

    def _spool(self, records: list[PredictionRecord]) -> Path | None:
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

    def _claimed_spool_files(self) -> Iterator[tuple[Path, list[PredictionRecord]]]:
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
                records, bad = [], 0
                for line in f:
                    try:
                        records.append(PredictionRecord.loads(line))
                    except (ValueError, TypeError):
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
            for start in range(0, len(records), self.batch_size):
                self._write_splitting(records[start : start + self.batch_size])  # an outage raises: file kept
            path.unlink()
            with self._cond:
                self.replayed += len(records)
            metrics.REPLAYED.inc(len(records))
            log.info("prediction log: replayed %d spooled record(s) from %s", len(records), path.name)

    # -- the writer thread ----------------------------------------------------------------

    def _ensure_thread(self) -> None:
        # A forked worker (gunicorn) inherits no threads: start one per process.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid, self._conn, self._closed = os.getpid(), None, False
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _take_batch(self, wait: float) -> list[PredictionRecord] | None:
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
            while len(self._buffer) < self.batch_size and not (self._closed or self._flushing):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._in_flight = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            return self._in_flight

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

    def _succeeded(self, batch: list[PredictionRecord]) -> None:
        with self._cond:
            mine = self._in_flight is batch  # else close() took it over
            if mine:
                self._in_flight = []
            if self._outage_since is not None:
                log.warning(
                    "prediction log: database back after %.0f s; writing %d buffered record(s)",
                    time.monotonic() - self._outage_since,
                    len(self._buffer) + len(batch),
                )
                self._outage_since, self._last_error = None, None
            self._cond.notify_all()
        if mine:
            metrics.BUFFERED.dec(len(batch))
        metrics.DATABASE_UP.set(1)

    def _failed(self, batch: list[PredictionRecord], exc: BaseException) -> None:
        now = time.monotonic()
        with self._cond:
            self.failures += 1
            if self._in_flight is batch and not self._closed:
                self._buffer.extendleft(reversed(batch))  # back in front, in order
                self._in_flight = []
            self._last_error = _first_line(exc)
            outage_since = self._outage_since
            started = outage_since is None
            if outage_since is None:
                outage_since = self._outage_since = now
            if started or now - self._last_error_logged >= self.error_every:
                self._last_error_logged = now
                log.error(
                    "prediction log: cannot write to %s for %.0f s (%s: %s); %d record(s) buffered, "
                    "%d spooled so far; retrying",
                    self.settings.where,
                    now - outage_since,
                    type(exc).__name__,
                    self._last_error,
                    len(self._buffer),
                    self.spooled,
                    exc_info=not isinstance(exc, psycopg2.Error | LogUnwritable),
                )
            self._cond.notify_all()
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
            cur.execute(PROBE, (list(LATER_COLUMNS),))
            writable, absent = cur.fetchone()
            if not writable:
                raise LogUnwritable(f"{self.settings.user} may not INSERT into predictions / prediction_dead_letters")
            if absent:
                files = ", ".join(sorted({LATER_COLUMNS[c] for c in absent}))
                raise LogUnwritable(
                    f"predictions lacks the column(s) {', '.join(absent)}: this database predates them; "
                    f"apply the bootstrap file(s) {files} once (docs/monitoring.md)"
                )

        self._transaction(probe)

    def _write_splitting(self, batch: list[PredictionRecord]) -> None:
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
        with self._cond:
            self.written += len(batch)
        metrics.WRITTEN.inc(len(batch))

    @staticmethod
    def _copy(cur: Any, batch: list[PredictionRecord]) -> None:
        data = copy_text(batch)
        try:
            cur.copy_expert(DIRECT_COPY, io.BytesIO(data))
        except psycopg2.errors.UniqueViolation:  # some landed before: each may land only once
            cur.connection.rollback()
            cur.execute(STAGE)
            cur.copy_expert(COPY, io.BytesIO(data))
            cur.execute(INSERT)

    def _dead_letter(self, record: PredictionRecord, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {_first_line(exc)}"
        try:
            self._transaction(lambda cur: cur.execute(DEAD_LETTER, (str(record.prediction_id), record.dumps(), error)))
        except RECORD_ERRORS as again:  # cannot happen with ASCII text, but never loop on it
            with self._cond:
                self.dropped += 1
            metrics.DROPPED.inc()
            log.error(
                "prediction log: DROPPED record %s: %s; dead letter refused too: %s", record.dumps(), error, again
            )
            return
        with self._cond:
            self.dead_lettered += 1
        metrics.DEAD_LETTERED.inc()
        log.error(
            "prediction log: the database refused the record for client %s (%s); kept in prediction_dead_letters",
            str(record.client_idx)[:40],
            error,
        )
