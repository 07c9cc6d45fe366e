"""A model's input contract: the feature declaration and the one check every input passes.

A model package declares its features once, as a `FeatureSchema` of `Feature`s (name, kind,
allowed range, nullable, what it means), and sets it as its class's `feature_schema`. Whatever
runs the model reads that declaration and nothing else: the API builds its request model,
OpenAPI document and HTML form from it, training validates with it, the registry builds its
smoke rows from it. Validation happens once on the way in: `validate` for a frame from
anywhere (training data, a notebook), or the API's request model, whose values `frame` turns
into a typed frame without checking them again.

`validate` refuses anything odd -- a missing column, text where a number belongs, a boolean,
infinity, a fractional count -- naming the column, the client idx (or the row when the frame
has no idx) and the value. Missing values are allowed where the feature is nullable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from machine_learning_engineering.errors import MLEError

Kind = Literal["integer", "number", "category"]
# The widest values the database columns hold (integer, double precision).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# dtype objects made once: `np.array(values, np.float64)` converts the type on every call (half
# the cost of a one-value array).
_FLOAT64, _OBJECT = np.dtype(np.float64), np.dtype(object)


class FeatureError(MLEError, ValueError):
    """A feature frame the model cannot score; the message names column, row and value."""


@dataclass(frozen=True)
class Feature:
    """One model input. Categories are not declared: a model learns them and flags others."""

    name: str
    kind: Kind
    description: str
    example: Any
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = True


def _show(value: object) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _rows(mask: np.ndarray[Any, Any], idx: np.ndarray[Any, Any] | None = None) -> str:
    """Where in the frame: the clients' idx when known (what a user can look up), else row numbers."""
    where = np.flatnonzero(mask)[:5]
    if idx is not None:
        return f"client idx {', '.join(_show(v) for v in idx[where])}"
    rows = [str(i) for i in where]
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(rows)}"


def _numeric(
    values: np.ndarray[Any, Any], feature: Feature, idx: np.ndarray[Any, Any] | None
) -> np.ndarray[Any, np.dtype[np.float64]]:
    # Numeric columns take the NumPy path; only object columns (None, text, mixed) pay for
    # a per-value look. A one-row request is checked in microseconds, 1M rows in milliseconds.
    name = feature.name
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
    if feature.kind == "integer":
        fractional = np.mod(numbers, 1) != 0
        fractional &= ~np.isnan(numbers)
        if fractional.any():
            raise FeatureError(
                f"{name} must be a whole number: {_show(numbers[fractional][0])} in {_rows(fractional, idx)}"
            )
    return numbers


def _text(values: np.ndarray[Any, Any], name: str, idx: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    missing = pd.isna(values)
    not_text = np.fromiter((not isinstance(v, str) for v in values), bool, len(values)) & ~missing
    if not_text.any():
        raise FeatureError(f"{name} must be text: {_show(values[not_text][0])} in {_rows(not_text, idx)}")
    out = values.astype(object, copy=True)
    out[missing] = None
    return out


def _clip(value: float, feature: Feature) -> float:
    low = -np.inf if feature.minimum is None else feature.minimum
    high = np.inf if feature.maximum is None else feature.maximum
    return float(min(max(value, low), high))


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered features of one model."""

    features: tuple[Feature, ...]

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def kinds(self) -> dict[str, str]:
        """name -> kind: what a saved version records, to be compared with the code that loads it."""
        return {f.name: f.kind for f in self.features}

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "category"]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind != "category"]

    @property
    def example(self) -> dict[str, Any]:
        return {f.name: f.example for f in self.features}

    def validate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The features in order, with clean dtypes; extra columns (idx, label) are ignored."""
        if not isinstance(frame, pd.DataFrame):
            raise FeatureError(f"features must be a pandas DataFrame, not {type(frame).__name__}")
        missing = [c for c in self.names if c not in frame.columns]
        if missing:
            raise FeatureError(f"missing feature column(s): {', '.join(missing)}")
        idx = frame["idx"].to_numpy() if "idx" in frame.columns else None
        clean: dict[str, Any] = self._checked({name: frame[name].to_numpy() for name in self.names}, idx)
        for name in self.categorical:  # the frame's missing category is NaN, as pandas has it
            clean[name] = pd.Series(np.where(pd.isna(clean[name]), np.nan, clean[name]), dtype=object)
        return pd.DataFrame(clean, copy=False)

    def validate_columns(
        self, columns: Mapping[str, Any], idx: np.ndarray[Any, Any] | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        """`validate` for columns (one array or list per feature: rows read with COPY, a columnar
        request): the same checks and messages (naming `idx` when given), no DataFrame. Returns
        `Columns`: numbers float64 with NaN, categories object arrays with None for missing."""
        missing = [c for c in self.names if c not in columns]
        if missing:
            raise FeatureError(f"missing feature column(s): {', '.join(missing)}")
        values = {name: np.asarray(columns[name]) for name in self.names}
        lengths = {len(v) for v in values.values()}
        if len(lengths) > 1:
            raise FeatureError(
                f"feature columns differ in length: {', '.join(f'{n}={len(v)}' for n, v in values.items())}"
            )
        return self._checked(values, idx)

    def _checked(
        self, values: Mapping[str, np.ndarray[Any, Any]], idx: np.ndarray[Any, Any] | None
    ) -> dict[str, np.ndarray[Any, Any]]:
        if len(next(iter(values.values()), ())) == 0:
            raise FeatureError("no rows to score")
        clean: dict[str, np.ndarray[Any, Any]] = {}
        for feature in self.features:
            column = values[feature.name]
            if feature.kind == "category":
                clean[feature.name] = _text(column, feature.name, idx)
            else:
                clean[feature.name] = _numeric(column, feature, idx)
            if not feature.nullable:
                absent = pd.isna(clean[feature.name])
                if absent.any():
                    raise FeatureError(f"{feature.name} is required but missing (null or NaN) in {_rows(absent, idx)}")
        return clean

    def frame(self, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """A typed frame from values that were already validated (the API's request model):
        numbers as float64 with NaN for None, categories as objects. Nothing is checked again."""
        columns: dict[str, Any] = {}
        for feature in self.features:
            values = [row[feature.name] for row in rows]
            if feature.kind == "category":
                columns[feature.name] = pd.Series([np.nan if v is None else v for v in values], dtype=object)
            else:
                columns[feature.name] = np.array(values, dtype="float64")
        return pd.DataFrame(columns, copy=False)

    def columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """`frame` as `Columns` (numbers float64 with NaN, categories objects with None): from
        already validated values, nothing checked again; the API's fast path."""
        out: dict[str, np.ndarray[Any, Any]] = {}
        one = rows[0] if len(rows) == 1 else None  # a request's row: no list built per feature
        for feature in self.features:
            name = feature.name
            values = [one[name]] if one is not None else [row[name] for row in rows]
            if feature.kind != "category":
                out[name] = np.array(values, _FLOAT64)
            elif one is not None and (values[0] is None or type(values[0]) is str):
                out[name] = np.array(values, _OBJECT)  # one text: nothing numpy could unpack
            else:
                column = np.empty(len(values), _OBJECT)
                column[:] = values
                out[name] = column
        return out

    def reference_rows(self, categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
        """Rows every version must score before it is promoted or served: each known category,
        one never seen, every nullable feature missing, zeros, and large values."""

        def row(**overrides: Any) -> dict[str, Any]:
            return {**self.example, **overrides}

        rows = []
        for name in self.categorical:
            rows += [row(**{name: value}) for value in categories.get(name, ())]
        rows.append(row(**{f.name: None for f in self.features if f.nullable}))
        rows.append(row(**{name: 0 for name in self.numeric}))
        large = {
            f.name: _clip(1e6 if f.kind == "number" else 100_000, f) for f in self.features if f.kind != "category"
        }
        rows.append(row(**large, **{name: "never-seen" for name in self.categorical}))
        return self.validate(pd.DataFrame(rows))
