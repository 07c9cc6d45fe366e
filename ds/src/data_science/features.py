"""The customer model's inputs, declared once: `SCHEMA`.

Every feature may be missing, as in real data (an empty cell in a raw file, a client without
activity): the estimator handles missing values natively. The declaration is read by whatever
runs the model, through `CustomerModel.feature_schema` (training validates with it, the API
builds its request model, OpenAPI document and form from it, the registry its smoke rows);
the checks themselves are the platform's (`machine_learning_engineering.schema`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_science.errors import DataScienceError
from machine_learning_engineering.schema import INT32_MAX, INT32_MIN, Feature, FeatureError, FeatureSchema

SCHEMA = FeatureSchema(
    (
        Feature("attr_a", "integer", "Profile attribute, a whole number (1-5 in the data).", 1, INT32_MIN, INT32_MAX),
        Feature(
            "attr_b", "category", "Profile category; one the model was trained on (others are scored as missing).", "c"
        ),
        Feature("scd_a", "number", "Current activity score; null for a client without activity.", 0.55),
        Feature(
            "scd_b", "integer", "Current activity level; null for a client without activity.", 3, INT32_MIN, INT32_MAX
        ),
    )
)
FEATURES: dict[str, str] = SCHEMA.kinds
CATEGORICAL = SCHEMA.categorical
NUMERIC = SCHEMA.numeric
LABEL = "label"

__all__ = [
    "CATEGORICAL",
    "FEATURES",
    "LABEL",
    "NUMERIC",
    "SCHEMA",
    "FeatureError",
    "validate_features",
    "validate_labels",
]


class LabelError(DataScienceError, FeatureError):
    """Labels the model cannot learn from; the message names the client and the value."""


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def validate_features(frame: pd.DataFrame) -> pd.DataFrame:
    """SCHEMA.validate: the four features in order with clean dtypes, or a FeatureError."""
    return SCHEMA.validate(frame)


def validate_labels(frame: pd.DataFrame) -> pd.Series:
    """The label column as 0/1 integers, or a LabelError naming the first bad value."""
    if LABEL not in frame.columns:
        raise LabelError(f"missing column {LABEL}")
    labels = pd.to_numeric(frame[LABEL].reset_index(drop=True), errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value, where = _plain(frame[LABEL].iloc[first]), f"row {first}"
        if "idx" in frame.columns:
            where = f"client idx {_plain(frame['idx'].iloc[first])!r}"
        raise LabelError(f"{LABEL} must be 0 or 1: {value!r} in {where}")
    return labels.astype(int)


# The challenge's example request, from the declaration: the tests' and benchmarks' baseline.
EXAMPLE_REQUEST = {"idx": 150000, "features": SCHEMA.example}
