"""Reading a period's rows, as the `monitor` login: the API's predictions and the batch scores.

Each source becomes one frame in the shape the report compares with the reference sample: the
model's features (typed by its `feature_schema`: numbers as float64, categories as text) and
`prediction` (the predicted label), `probability`, `label` (the true label, NaN until the labels
table has one), `out_of_distribution` (1.0 / 0.0, NaN where no gate judged the row) and
`model_version`. The queries are the SQL files beside this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.db import connect
from machine_learning_engineering.schema import FeatureSchema
from monitoring.period import Period

SOURCES = ("requests", "batch")
# Columns beside the features, in both the reference and the current frames.
PREDICTION, PROBABILITY, LABEL = "prediction", "probability", "label"
OOD, VERSION = "out_of_distribution", "model_version"


def query(name: str) -> str:
    """The text of sql/<name>.sql."""
    return (resources.files("monitoring") / "sql" / f"{name}.sql").read_text()


@dataclass(frozen=True)
class Current:
    """One source's rows in the period: `frame` as the report reads it, and the rows left out of
    it because their client is no longer in feature_store (batch scores only)."""

    source: str
    frame: pd.DataFrame
    without_features: int = 0

    @property
    def rows(self) -> int:
        return len(self.frame)


def features_frame(records: list[dict[str, Any] | None], schema: FeatureSchema) -> pd.DataFrame:
    """The schema's features of JSON records (a missing key or null is a missing value; text where
    a number belongs counts as missing too: the API validated what it logged, so that is only a
    record from a model with another schema)."""
    columns: dict[str, Any] = {}
    for feature in schema:
        values = [None if r is None else r.get(feature.name) for r in records]
        if feature.kind == "category":
            columns[feature.name] = pd.Series(
                [v if isinstance(v, str) else (np.nan if v is None else str(v)) for v in values], dtype=object
            )
        else:
            columns[feature.name] = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype("float64")
    return pd.DataFrame(columns)


def _frame(rows: list[tuple[Any, ...]], schema: FeatureSchema) -> pd.DataFrame:
    # Columns of requests.sql / batch.sql: client_idx, prediction, probability, model_version,
    # in_distribution, features, label.
    frame = features_frame([r[5] for r in rows], schema)
    frame[PREDICTION] = np.array([r[1] for r in rows], dtype="float64")
    frame[PROBABILITY] = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype="float64")
    frame[LABEL] = np.array([np.nan if r[6] is None else r[6] for r in rows], dtype="float64")
    frame[OOD] = np.array([np.nan if r[4] is None else float(not r[4]) for r in rows], dtype="float64")
    frame[VERSION] = pd.Series([r[3] for r in rows], dtype=object)
    frame.index = pd.Index([r[0] for r in rows], name="client_idx")
    return frame


def read_current(settings: DatabaseSettings, period: Period, schema: FeatureSchema) -> dict[str, Current]:
    """Both sources' rows in the period, read in one read-only transaction (one snapshot)."""
    params = {"start": period.start, "end": period.end, "since": period.since, "until": period.until}
    conn = connect(settings)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn, conn.cursor() as cur:
            cur.execute(query("requests"), params)
            requests = cur.fetchall()
            cur.execute(query("batch"), params)
            batch = cur.fetchall()
    finally:
        conn.close()
    scored = [r for r in batch if r[5] is not None]
    return {
        "requests": Current("requests", _frame(requests, schema)),
        "batch": Current("batch", _frame(scored, schema), without_features=len(batch) - len(scored)),
    }
