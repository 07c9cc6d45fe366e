"""`batch_predictions`: every client in feature_store scored by the champion, one day per
partition.

The model comes in through the MLEModel contract only (`model_class(MODEL_CLASS).load`), as
the API's does. feature_store is read as ds_user (mle_user cannot read the data tables); the
scores are written as mle_user, which may only INSERT and DELETE in batch_predictions
(bootstrap/50-batch-predictions.sql): a partition is replaced by delete + COPY in one
transaction, so a re-run leaves one set of rows per day, never a mix, and a run that fails
(bad data, a failed check) leaves the day as it was.

Columns end to end, `CHUNK_ROWS` clients at a time, so memory stays bounded however many
clients there are: binary COPY out of feature_store (`db.read_binary`, in idx order, every
chunk from one snapshot), decoded into NumPy columns (`db.decode_binary`), validated
(`FeatureSchema.validate_columns`: bad data names the client idx), judged by the version's
out-of-distribution gate, scored (`MLEModel.score_columns`, the compiled path when the version
has one), and written with binary COPY (`db.encode_binary`, `db.write_binary`), in idx order. One
thread reads the next chunk and one writes the last scored one while `SCORERS` threads score:
PostgreSQL's work (another process) overlaps ours. `make bench-model` measures each stage.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg2
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    asset,
)
from psycopg2 import sql
from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ
from psycopg2.extensions import connection as PgConnection

from machine_learning_engineering import db, registry
from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.errors import MLEError
from machine_learning_engineering.model import Columns, MLEModel, model_class
from machine_learning_engineering.schema import FeatureSchema
from orchestration.resources import DB_RETRY, ScoringResource, transient_only

BATCH_PREDICTIONS = AssetKey("batch_predictions")
# One partition per day the clients are scored; the first day the orchestrator scores.
DAILY = DailyPartitionsDefinition(start_date="2026-01-01")
EVERY_CLIENT_SCORED = "every_client_scored"
SOURCE, TABLE = "feature_store", "batch_predictions"
# Clients per chunk: about 5 MB read and 8 MB written each; SCORERS + 2 chunks in flight at most
# (one read, SCORERS scored, one written), whatever the number of clients. Smaller chunks start
# and finish the overlap sooner; much smaller ones pay a query each (measured: 50,000 to 400,000
# a chunk score 1.5 M clients within noise of each other).
CHUNK_ROWS = 100_000
# Threads that validate, judge and score chunks at once (beside one reading, one writing).
SCORERS = 2
# Columns of batch_predictions added after the table was first made, and the bootstrap file that
# adds them to a database volume made before it.
LATER_COLUMNS = {"in_distribution": "90-batch-ood.sql"}

T = TypeVar("T")


class ScoringError(MLEError, ValueError):
    """feature_store or batch_predictions is not what scoring needs; the message says what."""


def champion(model_dir: Path, spec: str) -> MLEModel:
    """The champion of `model_dir`, loaded (and verified) through the MLEModel contract."""
    version = registry.champion(model_dir)
    if version is None:
        raise Failure(
            description=f"no champion in {model_dir}: train and promote a model first (asset `model`)",
            allow_retries=False,
        )
    return model_class(spec).load(model_dir, version)


# --- where the time goes ----------------------------------------------------------------------


@dataclass
class Stages:
    """Seconds spent per stage, added up over chunks and threads (overlapped, their sum exceeds
    the wall time)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed


# --- pure parts: the query, a chunk's scores, its check ------------------------------------------


def select_list(types: Mapping[str, int], schema: FeatureSchema) -> tuple[sql.Composed, dict[str, int]]:
    """What to SELECT from feature_store (`types`: its columns' type OIDs) for `schema`: idx
    and the features, each cast where the binary decoder needs it (a category to text, a
    number to float8, idx to bigint), and the type OIDs the COPY stream will then carry."""
    names = ["idx", *schema.names]
    missing = [name for name in names if name not in types]
    if missing:
        raise ScoringError(
            f"{SOURCE} has no column {', '.join(missing)} (the model needs idx and {', '.join(schema.names)})"
        )
    kinds = {"idx": "idx", **schema.kinds}
    items, decoded = [], {}
    for name in names:
        oid, kind = types[name], kinds[name]
        if kind == "idx":
            keep, cast = oid in db.INTEGER_TYPES, (db.INT8, "int8")
        elif kind == "category":
            keep, cast = oid in db.TEXT_TYPES, (db.TEXT, "text")
        else:
            keep, cast = oid in db.NUMBER_TYPES, (db.FLOAT8, "float8")
        column = sql.Identifier(name)
        items.append(column if keep else sql.SQL("{}::{} AS {}").format(column, sql.SQL(cast[1]), column))
        decoded[name] = oid if keep else cast[0]
    return sql.SQL(", ").join(items), decoded


@dataclass(frozen=True)
class Scores:
    """One chunk scored: per client, its label, P(label = 1) and the gate's verdict
    (`in_distribution` None: the version has no gate)."""

    idx: np.ndarray[Any, np.dtype[np.int64]]
    labels: np.ndarray[Any, np.dtype[np.int64]]
    probabilities: np.ndarray[Any, np.dtype[np.float64]]
    in_distribution: np.ndarray[Any, np.dtype[np.bool_]] | None

    def __len__(self) -> int:
        return len(self.idx)


def in_distribution(model: MLEModel, columns: Columns) -> np.ndarray[Any, np.dtype[np.bool_]] | None:
    """The version's out-of-distribution verdict per row of validated columns (True: in
    distribution), from the gate's columnar check; None for a version saved without a gate."""
    gate = model.ood_gate_
    if gate is None:
        return None
    flagged: np.ndarray[Any, np.dtype[np.bool_]] = gate.out_of_distribution(columns)
    return ~flagged


def score_chunk(model: MLEModel, chunk: Mapping[str, np.ndarray[Any, Any]], stages: Stages) -> Scores:
    """Validate a chunk read from feature_store (a FeatureError names the client idx), judge
    it with the gate, score it."""
    schema = model.feature_schema
    idx = np.asarray(chunk["idx"], dtype=np.int64)
    with stages.timed("validate"):
        clean = schema.validate_columns({name: chunk[name] for name in schema.names}, idx)
    with stages.timed("gate"):
        verdicts = in_distribution(model, clean)
    with stages.timed("score"):
        labels, probabilities = model.score_columns(clean)
    return Scores(idx, np.asarray(labels), np.asarray(probabilities, dtype=np.float64), verdicts)


def problems(scores: Scores, after: int | None) -> list[str]:
    """What is wrong with a chunk's scores (empty: nothing): one label, probability and verdict
    per client, labels 0/1, probabilities in [0, 1], clients in ascending idx after `after`."""
    found = []
    n = len(scores)
    lengths = {len(scores.labels), len(scores.probabilities)}
    if scores.in_distribution is not None:
        lengths.add(len(scores.in_distribution))
    if lengths != {n}:
        return [f"{n} clients but {sorted(lengths)} labels, probabilities or verdicts"]
    bad = ~np.isin(scores.labels, (0, 1))
    if bad.any():
        found.append(f"label {scores.labels[bad][0].item()!r} (not 0 or 1) for client idx {scores.idx[bad][0]}")
    p = scores.probabilities
    bad = ~((p >= 0.0) & (p <= 1.0))  # NaN fails both
    if bad.any():
        found.append(f"probability {p[bad][0].item()!r} (not in [0, 1]) for client idx {scores.idx[bad][0]}")
    steps = np.diff(scores.idx, prepend=scores.idx[:1] - 1 if after is None else np.int64(after))
    if n and (steps <= 0).any():
        found.append(f"client idx {scores.idx[steps <= 0][0]} out of order or scored twice")
    return found


# --- the database's side -------------------------------------------------------------------------


class FeatureSource:
    """feature_store's idx and features, `chunk_rows` clients at a time in idx order, all read
    in one REPEATABLE READ, READ ONLY transaction of `settings` (ds_user): every chunk and the
    client count come from the same snapshot, and the ETL cannot swap the table meanwhile."""

    def __init__(self, settings: DatabaseSettings, schema: FeatureSchema, chunk_rows: int, stages: Stages) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        self.settings, self.schema, self.chunk_rows, self.stages = settings, schema, chunk_rows, stages
        self.clients = 0
        self._conn: PgConnection | None = None

    def __enter__(self) -> "FeatureSource":
        self._conn = db.connect(self.settings)
        self._conn.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def open(self) -> int:
        """Take the snapshot: the query's columns and the number of clients in feature_store."""
        assert self._conn is not None
        with self.stages.timed("count"), self._conn.cursor() as cur:
            table = sql.Identifier(SOURCE)
            self._select, self._types = select_list(
                db.describe(cur, sql.SQL("SELECT * FROM {}").format(table)), self.schema
            )
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
            self.clients = int(db.fetch_one(cur)[0])
            self._encoding = db.client_encoding(cur)
        return self.clients

    def first(self) -> dict[str, np.ndarray[Any, Any]] | None:
        """`open`, then the first chunk."""
        self.open()
        return self.read(None)

    def read(self, after: int | None) -> dict[str, np.ndarray[Any, Any]] | None:
        """The next chunk: clients with idx above `after` (None: from the first); None when
        there are no more."""
        assert self._conn is not None
        where = sql.SQL("") if after is None else sql.SQL("WHERE idx > {} ").format(sql.Literal(int(after)))
        query = sql.SQL("SELECT {} FROM {} {}ORDER BY idx LIMIT {}").format(
            self._select, sql.Identifier(SOURCE), where, sql.Literal(self.chunk_rows)
        )
        with self.stages.timed("copy out"), self._conn.cursor() as cur:
            data = db.read_binary(cur, query)
        with self.stages.timed("decode"):
            chunk = db.decode_binary(data, self._types, self._encoding)
        return chunk if len(chunk["idx"]) else None


class PartitionWriter:
    """One day of batch_predictions replaced in one transaction of `settings` (mle_user):
    `begin` deletes what the day held, `write` adds a chunk with COPY, `commit` publishes."""

    def __init__(self, settings: DatabaseSettings, day: date, version: str, stages: Stages) -> None:
        self.settings, self.day, self.version, self.stages = settings, day, version, stages
        self.replaced = self.written = 0
        self._conn: PgConnection | None = None

    def __enter__(self) -> "PartitionWriter":
        self._conn = db.connect(self.settings)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()  # without commit: rolled back

    def begin(self) -> int:
        assert self._conn is not None
        with self.stages.timed("delete"), self._conn.cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE partition_date = %s").format(sql.Identifier(TABLE)), (self.day,))
            self.replaced = cur.rowcount
            self._encoding = db.client_encoding(cur)
        return self.replaced

    def write(self, scores: Scores) -> int:
        assert self._conn is not None
        n = len(scores)
        verdicts = scores.in_distribution
        columns = {
            "partition_date": db.CopyColumn("date", self.day),
            "client_idx": db.CopyColumn("int8", scores.idx),
            "label": db.CopyColumn("int4", scores.labels),
            "probability": db.CopyColumn("float8", scores.probabilities),
            "model_version": db.CopyColumn("text", self.version),
            "in_distribution": (
                db.CopyColumn("bool", False, null=np.ones(n, dtype=bool))
                if verdicts is None
                else db.CopyColumn("bool", verdicts)
            ),
        }
        with self.stages.timed("encode"):
            data = db.encode_binary(columns, n, self._encoding)
        with self.stages.timed("copy in"), self._conn.cursor() as cur:
            try:
                written = db.write_binary(cur, TABLE, list(columns), data)
            except psycopg2.errors.UndefinedColumn as exc:
                raise ScoringError(f"{TABLE}: {db.first_line(exc)}: {_later_columns_hint()}") from None
        self.written += written
        return written

    def commit(self) -> None:
        assert self._conn is not None
        with self.stages.timed("commit"):
            self._conn.commit()


def _later_columns_hint() -> str:
    files = sorted(set(LATER_COLUMNS.values()))
    return (
        f"this database was made before bootstrap/{', '.join(files)} added column(s) "
        f"{', '.join(LATER_COLUMNS)}; apply it once as the superuser (docs/orchestration.md)"
    )


# --- the run -----------------------------------------------------------------------------------


class _Inline:
    """An executor that runs each task at once, in the caller's thread (`overlap=False`)."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> "Future[T]":
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # handed over like a thread's
            done.set_exception(exc)
        return done

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


@dataclass
class Outcome:
    """What a run did: clients in feature_store, rows scored and written, rows of the day it
    replaced, whether it published (committed), what failed the check, and the time spent."""

    day: date
    version: str
    clients: int = 0
    scored: int = 0
    written: int = 0
    replaced: int = 0
    positives: int = 0
    out_of_distribution: int | None = None
    problems: list[str] = field(default_factory=list)
    published: bool = False
    seconds: float = 0.0
    stages: Stages = field(default_factory=Stages)

    @property
    def passed(self) -> bool:
        return not self.problems and self.scored == self.clients > 0


def score_partition(
    reader: DatabaseSettings,
    writer: DatabaseSettings,
    model: MLEModel,
    day: date,
    *,
    chunk_rows: int = CHUNK_ROWS,
    overlap: bool = True,
    scorers: int = SCORERS,
) -> Outcome:
    """Score every client of feature_store (read as `reader`) with `model` into the `day`
    partition of batch_predictions (written as `writer`), replacing what it held, and commit
    only if every client was scored once with a valid score (`Outcome.passed`); otherwise the
    day keeps what it held. Bad data raises (FeatureError naming the client idx), rolled back.

    Overlapped (the default), one thread reads the next chunk, `scorers` threads validate,
    judge and score chunks (the kernels release the GIL; a model serves several threads in
    the API too) and one writes the last scored chunk, in order; `overlap=False` runs every
    stage in turn in this thread (to measure them)."""
    if scorers < 1:
        raise ValueError(f"scorers must be at least 1, not {scorers}")
    outcome = Outcome(day, model.version_ or "unversioned")
    stages = outcome.stages
    started = time.perf_counter()
    io: ThreadPoolExecutor | _Inline = ThreadPoolExecutor(2, "batch-scoring-io") if overlap else _Inline()
    compute: ThreadPoolExecutor | _Inline = ThreadPoolExecutor(scorers, "batch-scoring") if overlap else _Inline()
    in_flight = scorers if overlap else 1
    with (
        FeatureSource(reader, model.feature_schema, chunk_rows, stages) as source,
        PartitionWriter(writer, day, outcome.version, stages) as sink,
    ):
        try:
            writing: Future[int] = io.submit(sink.begin)  # the delete runs while the first chunk is read
            reading: Future[dict[str, np.ndarray[Any, Any]] | None] | None = io.submit(source.first)
            scoring: deque[Future[Scores]] = deque()
            after: int | None = None
            while True:
                while reading is not None and len(scoring) < in_flight:
                    chunk = reading.result()
                    if chunk is None:
                        reading = None
                        break
                    reading = io.submit(source.read, int(chunk["idx"][-1]))
                    scoring.append(compute.submit(score_chunk, model, chunk, stages))
                if not scoring:
                    break
                scores = scoring.popleft().result()
                outcome.problems += problems(scores, after)
                if outcome.problems:
                    break
                after = int(scores.idx[-1])
                outcome.scored += len(scores)
                outcome.positives += int(scores.labels.sum())
                if scores.in_distribution is not None:
                    outcome.out_of_distribution = (outcome.out_of_distribution or 0) + int(
                        len(scores) - scores.in_distribution.sum()
                    )
                writing.result()
                writing = io.submit(sink.write, scores)
            writing.result()
        finally:
            compute.shutdown(wait=True, cancel_futures=True)
            io.shutdown(wait=True, cancel_futures=True)
        outcome.clients, outcome.replaced, outcome.written = source.clients, sink.replaced, sink.written
        if outcome.passed and outcome.written == outcome.scored:
            sink.commit()
            outcome.published = True
    outcome.seconds = time.perf_counter() - started
    return outcome


@asset(
    key=BATCH_PREDICTIONS,
    deps=[AssetKey("feature_store"), AssetKey("model")],
    partitions_def=DAILY,
    group_name="scoring",
    retry_policy=DB_RETRY,
    check_specs=[
        AssetCheckSpec(
            EVERY_CLIENT_SCORED,
            asset=BATCH_PREDICTIONS,
            blocking=True,
            description="One score per client of feature_store, each with a probability in [0, 1].",
        )
    ],
    description="Every client of feature_store scored by the champion; one partition per day.",
)
def batch_predictions(context: AssetExecutionContext, scoring: ScoringResource) -> Iterator[MaterializeResult[None]]:
    day = date.fromisoformat(context.partition_key)
    settings = scoring.registry()
    with transient_only():
        model = champion(settings.model_dir, settings.model_class)
        outcome = score_partition(scoring.reader(), scoring.writer(), model, day)
    context.log.info(
        "%s: %d of %d clients scored by %s in %.1f s (%d rows replaced)%s",
        day,
        outcome.scored,
        outcome.clients,
        outcome.version,
        outcome.seconds,
        outcome.replaced,
        "" if outcome.published else f"; NOT published: {'; '.join(outcome.problems) or 'not every client scored'}",
    )
    metadata: dict[str, Any] = {
        "partition_date": day.isoformat(),
        "rows": outcome.written if outcome.published else 0,
        "replaced_rows": outcome.replaced if outcome.published else 0,
        "model_version": outcome.version,
        "published": outcome.published,
        "positive_share": outcome.positives / outcome.scored if outcome.scored else 0.0,
        "seconds": round(outcome.seconds, 3),
        "stage_seconds": {k: round(v, 3) for k, v in outcome.stages.seconds.items()},
    }
    if outcome.out_of_distribution is not None:  # a version with a gate
        metadata["out_of_distribution_share"] = outcome.out_of_distribution / outcome.scored if outcome.scored else 0.0
    yield MaterializeResult(
        metadata=metadata,
        check_results=[
            AssetCheckResult(
                check_name=EVERY_CLIENT_SCORED,
                passed=outcome.published,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "clients": outcome.clients,
                    "scored": outcome.scored,
                    "problems": "; ".join(outcome.problems) or "none",
                },
            )
        ],
    )
