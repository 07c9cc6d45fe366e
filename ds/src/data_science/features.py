"""The model's input contract: declared once here, checked before anything reaches scikit-learn.

`SCHEMA` is the one declaration of the features (name, type, allowed range, nullable, what it
means). Training validates with it, the API builds its request model, OpenAPI document and
HTML form from it, and the EDA lists it. Every feature may be missing, as in real data (an
empty cell in a raw file, a client without activity): the estimator handles missing values
natively. Anything else odd -- a missing column, text where a number belongs, a boolean,
infinity, a fractional count -- is refused, naming the column, the client idx (or the row
when the frame has no idx) and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

# The widest values the database columns hold (feature_store: integer, double precision).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Feature:
    """One model input. Categories are not declared: the model learns them and flags others."""

    name: str
    kind: Literal["integer", "number", "category"]
    description: str
    example: Any
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = True


SCHEMA: tuple[Feature, ...] = (
    Feature("attr_a", "integer", "Profile attribute, a whole number (1-5 in the data).", 1, INT32_MIN, INT32_MAX),
    Feature(
        "attr_b", "category", "Profile category; one the model was trained on (others are scored as missing).", "c"
    ),
    Feature("scd_a", "number", "Current activity score; null for a client without activity.", 0.55),
    Feature("scd_b", "integer", "Current activity level; null for a client without activity.", 3, INT32_MIN, INT32_MAX),
)
FEATURES: dict[str, str] = {feature.name: feature.kind for feature in SCHEMA}
CATEGORICAL = [feature.name for feature in SCHEMA if feature.kind == "category"]
NUMERIC = [feature.name for feature in SCHEMA if feature.kind != "category"]
LABEL = "label"


class FeatureError(ValueError):
    """A feature frame the model cannot score; the message names column, row and value."""


def _show(value: object) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _rows(mask: np.ndarray, idx: np.ndarray | None = None) -> str:
    """Where in the frame: the clients' idx when known (what a user can look up), else row numbers."""
    where = np.flatnonzero(mask)[:5]
    if idx is not None:
        return f"client idx {', '.join(_show(v) for v in idx[where])}"
    rows = [str(i) for i in where]
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(rows)}"


def _numeric(values: np.ndarray, name: str, whole: bool, idx: np.ndarray | None) -> np.ndarray:
    # Numeric columns take the NumPy path; only object columns (None, text, mixed) pay for
    # a per-value look. A one-row request is checked in microseconds, 1M rows in milliseconds.
    if values.dtype.kind == "b":
        raise FeatureError(f"{name} must be a number, not a boolean")
    if values.dtype.kind in "iuf":
        numbers = values.astype("float64", copy=False)
    else:
        if any(isinstance(v, bool | np.bool_) for v in values):
            raise FeatureError(f"{name} must be a number, not a boolean")
        numbers = np.asarray(pd.to_numeric(values, errors="coerce"), dtype="float64")
        unparseable = np.isnan(numbers) & ~pd.isna(values)
        if unparseable.any():
            first = values[unparseable][0]
            raise FeatureError(f"{name} must be a number: {_show(first)} in {_rows(unparseable, idx)}")
    infinite = np.isinf(numbers)
    if infinite.any():
        raise FeatureError(f"{name} must be finite: infinity in {_rows(infinite, idx)}")
    if whole:
        fractional = np.mod(numbers, 1) != 0
        fractional &= ~np.isnan(numbers)
        if fractional.any():
            raise FeatureError(
                f"{name} must be a whole number: {_show(numbers[fractional][0])} in {_rows(fractional, idx)}"
            )
    return numbers


def _text(values: np.ndarray, name: str, idx: np.ndarray | None) -> pd.Series:
    missing = pd.isna(values)
    not_text = np.fromiter((not isinstance(v, str) for v in values), bool, len(values)) & ~missing
    if not_text.any():
        raise FeatureError(f"{name} must be text: {_show(values[not_text][0])} in {_rows(not_text, idx)}")
    out = values.astype(object, copy=True)
    out[missing] = np.nan
    return pd.Series(out, dtype=object)  # object, not pandas' str dtype: NaN stays NaN


def validate_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The four features in order, with clean dtypes; extra columns (idx, label) are ignored."""
    if not isinstance(frame, pd.DataFrame):
        raise FeatureError(f"features must be a pandas DataFrame, not {type(frame).__name__}")
    missing = [c for c in FEATURES if c not in frame.columns]
    if missing:
        raise FeatureError(f"missing feature column(s): {', '.join(missing)}")
    if frame.empty:
        raise FeatureError("no rows to score")
    idx = frame["idx"].to_numpy() if "idx" in frame.columns else None
    clean: dict[str, np.ndarray | pd.Series] = {}
    for feature in SCHEMA:
        values = frame[feature.name].to_numpy()
        if feature.kind == "category":
            clean[feature.name] = _text(values, feature.name, idx)
        else:
            clean[feature.name] = _numeric(values, feature.name, feature.kind == "integer", idx)
        if not feature.nullable:
            absent = pd.isna(clean[feature.name])
            if absent.any():
                raise FeatureError(f"{feature.name} is required but missing (null or NaN) in {_rows(absent, idx)}")
    return pd.DataFrame(clean, copy=False)


def validate_labels(frame: pd.DataFrame) -> pd.Series:
    if LABEL not in frame.columns:
        raise FeatureError(f"missing column {LABEL}")
    labels = pd.to_numeric(frame[LABEL].reset_index(drop=True), errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        idx = frame["idx"].to_numpy() if "idx" in frame.columns else None
        raise FeatureError(
            f"{LABEL} must be 0 or 1: {_show(frame[LABEL].iloc[int(np.flatnonzero(bad)[0])])} in {_rows(bad, idx)}"
        )
    return labels.astype(int)
