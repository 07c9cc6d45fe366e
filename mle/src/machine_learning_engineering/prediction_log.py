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

import json
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import psycopg2
from psycopg2.extras import execute_values

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect_once

log = logging.getLogger(__name__)

INSERT = """
INSERT INTO predictions (prediction_id, client_idx, label, probability, model_version, features, predicted_at)
VALUES %s
ON CONFLICT (prediction_id) DO NOTHING
"""


def _json_value(value: Any) -> Any:
    """JSON-safe scalar: numpy to Python, NaN to null (jsonb has no NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class PredictionRecord:
    client_idx: int
    label: int
    probability: float | None
    model_version: str
    features: dict[str, Any]
    prediction_id: uuid.UUID = field(default_factory=uuid.uuid4)
    predicted_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def batch(
        cls,
        idx: Sequence[Any],
        labels: np.ndarray,
        probabilities: np.ndarray | None,
        version: str,
        features: pd.DataFrame,
    ) -> list[PredictionRecord]:
        rows = features.to_dict("records")
        now = datetime.now(UTC)
        return [
            cls(
                client_idx=int(idx[i]),
                label=int(labels[i]),
                probability=None if probabilities is None else float(probabilities[i]),
                model_version=version,
                features={k: _json_value(v) for k, v in rows[i].items()},
                predicted_at=now,
            )
            for i in range(len(rows))
        ]

    def as_row(self) -> tuple:
        return (
            str(self.prediction_id),
            self.client_idx,
            self.label,
            self.probability,
            self.model_version,
            json.dumps(self.features),
            self.predicted_at,
        )


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
    ) -> None:
        self.settings = settings
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_backoff = max_backoff
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
            self._buffer.extend(records)
            self._trim()
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written; False if that took longer than `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
            while self._buffer or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
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
                execute_values(cur, INSERT, [r.as_row() for r in batch], page_size=len(batch))
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
