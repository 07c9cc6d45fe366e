"""`batch_predictions`: every client in feature_store scored by the champion, one day per
partition.

The model comes in through the MLEModel contract only (`model_class(MODEL_CLASS).load`), as
the API's does. feature_store is read as ds_user (mle_user cannot read the data tables); the
scores are written as mle_user, which may only INSERT and DELETE in batch_predictions
(bootstrap/50-batch-predictions.sql): a partition is replaced by delete + insert in one
transaction, so a re-run leaves one set of rows per day, never a mix."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path

import pandas as pd
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
from psycopg2.extras import execute_values

from machine_learning_engineering import registry
from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect
from machine_learning_engineering.model import MLEModel, model_class
from orchestration.resources import DB_RETRY, ScoringResource, transient_only

BATCH_PREDICTIONS = AssetKey("batch_predictions")
# One partition per day the clients are scored; the first day the orchestrator scores.
DAILY = DailyPartitionsDefinition(start_date="2026-01-01")
EVERY_CLIENT_SCORED = "every_client_scored"


def champion(model_dir: Path, spec: str) -> MLEModel:
    """The champion of `model_dir`, loaded (and verified) through the MLEModel contract."""
    version = registry.champion(model_dir)
    if version is None:
        raise Failure(
            description=f"no champion in {model_dir}: train and promote a model first (asset `model`)",
            allow_retries=False,
        )
    return model_class(spec).load(model_dir, version)


def read_features(settings: DatabaseSettings, model: MLEModel) -> pd.DataFrame:
    """idx and the model's features (its feature_schema) of every client in feature_store."""
    columns = ["idx", *model.feature_schema.names]
    query = sql.SQL("SELECT {} FROM feature_store ORDER BY idx").format(
        sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query)
            return pd.DataFrame(cur.fetchall(), columns=columns)
    finally:
        conn.close()


def replace_partition(settings: DatabaseSettings, day: date, rows: Sequence[tuple[object, ...]]) -> int:
    """The day's rows in place of whatever it held, in one transaction; rows written."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM batch_predictions WHERE partition_date = %s", (day,))
            replaced = cur.rowcount
            execute_values(
                cur,
                "INSERT INTO batch_predictions (partition_date, client_idx, label, probability, model_version)"
                " VALUES %s",
                rows,
                page_size=5_000,
            )
            return replaced
    finally:
        conn.close()


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
        frame = read_features(scoring.reader(), model)
        labels, probabilities = model.predict_labels_and_probabilities(frame.drop(columns="idx"))
        version = model.version_ or "unversioned"
        rows = [
            (day, int(idx), int(label), float(p), version)
            for idx, label, p in zip(frame["idx"], labels, probabilities, strict=True)
        ]
        scored = len(rows) == len(frame) > 0 and all(0.0 <= r[3] <= 1.0 for r in rows)
        # When the check fails nothing is written: the day keeps what it held.
        replaced = replace_partition(scoring.writer(), day, rows) if scored else 0
    context.log.info("%s: %d clients scored by %s (%d rows replaced)", day, len(rows), version, replaced)
    yield MaterializeResult(
        metadata={
            "partition_date": day.isoformat(),
            "rows": len(rows),
            "replaced_rows": replaced,
            "model_version": version,
            "published": scored,
            "positive_share": float(labels.mean()) if len(labels) else 0.0,
        },
        check_results=[
            AssetCheckResult(
                check_name=EVERY_CLIENT_SCORED,
                passed=scored,
                severity=AssetCheckSeverity.ERROR,
                metadata={"clients": len(frame), "scored": len(rows)},
            )
        ],
    )
