"""The `predictions` table writer: acknowledged means recorded, or the loss is counted and visible.

`log()` only appends to an in-memory buffer; a background thread writes batches as
`mle_user`. What can happen to a record, and where it is counted (`stats()`, `/metrics`):
- written: the normal case. Each record carries a client-made UUID and inserts are
  `ON CONFLICT DO NOTHING`, so a batch retried after an ambiguous failure lands once;
- dead-lettered: the database refused the record itself (a value a column cannot hold). A
  refused batch is split in halves until the offending records are alone; they go to
  `prediction_dead_letters` with the error, everything else is written;
- spooled: the database is away when the process stops, or the buffer overflows during a long
  outage. The records go to a local file (written atomically) and are replayed, by whichever
  process of the API finds the file first, once the database takes writes again; ids make the
  replay land exactly once even if a replay is interrupted and repeated;
- dropped: only when neither the database nor the spool can take a record (no spool
  directory, full disk). Logged as an ERROR with the count.
While the database cannot be written, the thread retries with capped backoff, says so at
ERROR when the outage starts and again every minute, and `health()` reports it.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
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

# Batches arrive by COPY into a per-connection staging table and move on with one INSERT:
# COPY is the fastest way in, and the INSERT keeps ON CONFLICT, so a retried batch lands once.
STAGE = """
CREATE TEMP TABLE IF NOT EXISTS incoming_predictions (
    prediction_id uuid, client_idx bigint, label smallint, probability double precision,
    model_version text, features jsonb, api_key text, predicted_at timestamptz,
    in_distribution boolean, ood_reasons jsonb
) ON COMMIT DELETE ROWS
"""
COPY = "COPY incoming_predictions FROM STDIN WITH (FORMAT csv)"
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
    csv.Error,
)
SPOOL_SUFFIX = ".jsonl"


def _uuid4_hex(n: int) -> list[str]:
    """n random version-4 UUIDs as hex, in one system call rather than n."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    return [bytes(row).hex() for row in raw]


def _first_line(exc: BaseException) -> str:
    """ASCII, so that the dead-letter table can always store it."""
    return first_line(exc).encode("ascii", "backslashreplace").decode()


class LogUnwritable(RuntimeError):
    """The database answers, but this login cannot append to the prediction log."""


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
        features: pd.DataFrame,
        api_key: str | None = None,
        verdicts: Sequence[Verdict] | None = None,
    ) -> list[PredictionRecord]:
        """Records for a scored frame, built column-wise: this runs on every request."""
        n = len(features)
        # pandas writes JSON in C and turns NaN into null, as jsonb needs.
        rows = features.to_json(orient="records", lines=True, double_precision=15).splitlines() if n else []
        ids, now = _uuid4_hex(n), datetime.now(UTC).isoformat()
        labels_ = np.asarray(labels).astype(int).tolist()
        probabilities_ = [None] * n if probabilities is None else np.asarray(probabilities, dtype=float).tolist()
        flags: list[bool | None] = [None] * n
        reasons: list[str | None] = [None] * n
        if verdicts is not None:
            flags = [v.in_distribution for v in verdicts]
            reasons = [json.dumps(v.reasons, ensure_ascii=False) if v.findings else "[]" for v in verdicts]
        return [
            cls(
                ids[i], int(idx[i]), labels_[i], probabilities_[i], version, rows[i], api_key, now, flags[i], reasons[i]
            )
            for i in range(n)
        ]

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
        """Queue records for writing. Never blocks on the database, never raises for it."""
        with self._cond:
            self._ensure_thread()
            was_empty = not self._buffer
            self._buffer.extend(records)
            metrics.BUFFERED.inc(len(records))
            if len(self._buffer) > self.capacity:
                self._overflow()
            if was_empty or len(self._buffer) >= self.batch_size:  # else the writer is lingering
                self._cond.notify_all()

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
        text = io.StringIO()
        csv.writer(text).writerows(batch)
        # Encoded here, not by psycopg2 mid-COPY: a string UTF-8 cannot hold is then the
        # record's fault (UnicodeEncodeError), not a cancelled statement that looks like an outage.
        data = io.BytesIO(text.getvalue().encode("utf-8"))
        cur.execute(STAGE)
        cur.copy_expert(COPY, data)
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
