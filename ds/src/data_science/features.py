"""The model's input contract, checked before anything reaches scikit-learn.

attr_a and attr_b come from the profile and are required. scd_a and scd_b come from the
activity history and are legitimately missing (NULL in feature_store) for a client without
activity, so NaN / None is accepted there and handled by the model. Anything else odd -- a
missing column, text where a number belongs, a boolean, infinity, a fractional count -- is
refused with the column, row and value named.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES: dict[str, str] = {"attr_a": "integer", "attr_b": "category", "scd_a": "number", "scd_b": "integer"}
REQUIRED = ("attr_a", "attr_b")
LABEL = "label"


class FeatureError(ValueError):
    """A feature frame the model cannot score; the message names column, row and value."""


def _show(value: object) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _rows(mask: pd.Series) -> str:
    rows = [str(i) for i in np.flatnonzero(mask.to_numpy())[:5]]
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(rows)}"


def _numeric(column: pd.Series, name: str, whole: bool) -> pd.Series:
    if pd.api.types.is_bool_dtype(column) or column.map(lambda v: isinstance(v, bool | np.bool_)).any():
        raise FeatureError(f"{name} must be a number, not a boolean")
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    unparseable = values.isna() & column.notna()
    if unparseable.any():
        first = column[unparseable].iloc[0]
        raise FeatureError(f"{name} must be a number: {_show(first)} in {_rows(unparseable)}")
    if np.isinf(values).any():
        raise FeatureError(f"{name} must be finite: infinity in {_rows(np.isinf(values))}")
    if whole and ((values % 1 != 0) & values.notna()).any():
        fractional = (values % 1 != 0) & values.notna()
        raise FeatureError(f"{name} must be a whole number: {_show(values[fractional].iloc[0])} in {_rows(fractional)}")
    return values


def validate_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The four features in order, with clean dtypes; extra columns (idx, label) are ignored."""
    if not isinstance(frame, pd.DataFrame):
        raise FeatureError(f"features must be a pandas DataFrame, not {type(frame).__name__}")
    missing = [c for c in FEATURES if c not in frame.columns]
    if missing:
        raise FeatureError(f"missing feature column(s): {', '.join(missing)}")
    if frame.empty:
        raise FeatureError("no rows to score")
    frame = frame.reset_index(drop=True)
    clean = pd.DataFrame(index=frame.index)
    for name, kind in FEATURES.items():
        column = frame[name]
        if kind == "category":
            text = column.map(lambda v: isinstance(v, str))
            if (~text & column.notna()).any():
                bad = ~text & column.notna()
                raise FeatureError(f"{name} must be text: {_show(column[bad].iloc[0])} in {_rows(bad)}")
            clean[name] = column.astype(object).where(column.notna(), np.nan)
        else:
            clean[name] = _numeric(column, name, whole=kind == "integer")
    for name in REQUIRED:
        if clean[name].isna().any():
            raise FeatureError(f"{name} is required but missing (null or NaN) in {_rows(clean[name].isna())}")
    return clean


def validate_labels(frame: pd.DataFrame) -> pd.Series:
    if LABEL not in frame.columns:
        raise FeatureError(f"missing column {LABEL}")
    labels = pd.to_numeric(frame[LABEL].reset_index(drop=True), errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        raise FeatureError(
            f"{LABEL} must be 0 or 1: {_show(frame[LABEL].iloc[int(np.flatnonzero(bad)[0])])} in {_rows(bad)}"
        )
    return labels.astype(int)
