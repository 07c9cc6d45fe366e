"""The `predictions` table writer: never fails a prediction, never slows one down.

`log()` only appends to an in-memory buffer; a background thread writes batches as
`mle_user`. When the database is unreachable the buffer keeps the records (up to
`capacity`) and the thread retries with capped backoff; when it returns, everything buffered
is written, in order. Each record carries a client-made UUID and inserts are
`ON CONFLICT DO NOTHING`, so a batch retried after an ambiguous failure is written once.
Only if an outage outlasts the buffer are the oldest records dropped, counted and logged:
serving stays up, and the loss is visible in `stats()` and the log.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
import psycopg2

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect_once

log = logging.getLogger(__name__)

# Batches arrive by COPY into a per-connection staging table and move on with one INSERT:
# COPY is the fastest way in, and the INSERT keeps ON CONFLICT, so a retried batch lands once.
STAGE = """
CREATE TEMP TABLE IF NOT EXISTS incoming_predictions (
    prediction_id uuid, client_idx bigint, label smallint, probability double precision,
    model_version text, features jsonb, predicted_at timestamptz
) ON COMMIT DELETE ROWS
"""
COPY = "COPY incoming_predictions FROM STDIN WITH (FORMAT csv)"
INSERT = """
INSERT INTO predictions (prediction_id, client_idx, label, probability, model_version, features, predicted_at)
SELECT prediction_id, client_idx, label, probability, model_version, features, predicted_at
FROM incoming_predictions
ON CONFLICT (prediction_id) DO NOTHING
"""


def _uuid4_hex(n: int) -> list[str]:
    """n random version-4 UUIDs as hex, in one system call rather than n."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    return [bytes(row).hex() for row in raw]


class PredictionRecord(NamedTuple):
    """One logged prediction, in the column order of the `predictions` table.

    `features` is the row's JSON text (NaN as null) and `predicted_at` ISO 8601 text: the
    writer streams records to COPY as they are. `prediction_id` is made here, by the client,
    so a batch written twice after an ambiguous failure is stored once.
    """

    prediction_id: str
    client_idx: int
    label: int
    probability: float | None
    model_version: str
    features: str
    predicted_at: str

    @classmethod
    def batch(
        cls,
        idx: Sequence[Any],
        labels: np.ndarray,
        probabilities: np.ndarray | None,
        version: str,
        features: pd.DataFrame,
    ) -> list[PredictionRecord]:
        """Records for a scored frame, built column-wise: this runs on every request."""
        n = len(features)
        # pandas writes JSON in C and turns NaN into null, as jsonb needs.
        rows = features.to_json(orient="records", lines=True, double_precision=15).splitlines() if n else []
        ids, now = _uuid4_hex(n), datetime.now(UTC).isoformat()
        labels_ = np.asarray(labels).astype(int).tolist()
        probabilities_ = [None] * n if probabilities is None else np.asarray(probabilities, dtype=float).tolist()
        return [cls(ids[i], int(idx[i]), labels_[i], probabilities_[i], version, rows[i], now) for i in range(n)]


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
    ) -> None:
        self.settings = settings
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self.linger = linger
        self._flushing = 0
        self._buffer: deque[PredictionRecord] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        self._conn: Any = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._outage_since: float | None = None

    @classmethod
    def default(cls) -> PredictionLogger:
        """The process-wide logger, writing as `mle_user` with settings from the environment."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls(DatabaseSettings.from_env("mle"))
            return cls._default

    @classmethod
    def close_default(cls, timeout: float = 10.0) -> None:
        """Flush and stop the process-wide logger, if one was started (worker shutdown)."""
        with cls._default_lock:
            logger = cls._default
        if logger is not None:
            logger.close(timeout)

    def log(self, records: Sequence[PredictionRecord]) -> None:
        """Queue records for writing. Never blocks on the database, never raises for it."""
        with self._cond:
            self._ensure_thread()
            was_empty = not self._buffer
            self._buffer.extend(records)
            self._trim()
            if was_empty or len(self._buffer) >= self.batch_size:  # else the writer is lingering
                self._cond.notify()

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
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, int | bool]:
        with self._cond:
            return {
                "written": self.written,
                "pending": len(self._buffer) + self._in_flight,
                "dropped": self.dropped,
                "failures": self.failures,
                "database_available": self._outage_since is None,
            }

    def _trim(self) -> None:
        """Drop the oldest records beyond capacity (caller holds the lock), loudly."""
        overflow = len(self._buffer) - self.capacity
        if overflow > 0:
            for _ in range(overflow):
                self._buffer.popleft()
            self.dropped += overflow
            log.error("prediction log buffer full: dropped %d oldest record(s), %d in total", overflow, self.dropped)

    # -- writer thread --------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        # A forked worker (gunicorn) inherits no threads: start one per process.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid, self._conn, self._closed = os.getpid(), None, False
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _take_batch(self) -> list[PredictionRecord]:
        with self._cond:
            while not self._buffer and not self._closed:
                self._cond.wait()
            # Linger briefly so one transaction carries many requests' records: written one
            # by one, each record costs a round trip and a commit on the request path's CPU.
            deadline = time.monotonic() + self.linger
            while len(self._buffer) < self.batch_size and not (self._closed or self._flushing):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            self._in_flight = len(batch)
            return batch

    def _run(self) -> None:
        backoff = 0.25
        while True:
            batch = self._take_batch()
            if not batch:
                return  # closed and drained
            try:
                self._write(batch)
            except psycopg2.Error as exc:
                self._failed(batch, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.25
            with self._cond:
                self.written += len(batch)
                self._in_flight = 0
                if self._outage_since is not None:
                    log.warning(
                        "prediction log: database back after %.0f s; writing %d buffered record(s)",
                        time.monotonic() - self._outage_since,
                        len(self._buffer) + len(batch),
                    )
                    self._outage_since = None
                self._cond.notify_all()

    def _write(self, batch: list[PredictionRecord]) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = connect_once(self.settings, application_name="prediction-log")
        try:
            with self._conn, self._conn.cursor() as cur:
                data = io.StringIO()
                csv.writer(data).writerows(batch)
                data.seek(0)
                cur.execute(STAGE)
                cur.copy_expert(COPY, data)
                cur.execute(INSERT)
        except psycopg2.Error:
            self._conn.close()
            self._conn = None
            raise

    def _failed(self, batch: list[PredictionRecord], exc: psycopg2.Error) -> None:
        with self._cond:
            self.failures += 1
            self._buffer.extendleft(reversed(batch))  # back in front, in order
            self._in_flight = 0
            self._trim()
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.error(
                    "prediction log: cannot write to %s (%s); buffering up to %d records and retrying",
                    self.settings.where,
                    str(exc).strip().splitlines()[0],
                    self.capacity,
                )
            self._cond.notify_all()
