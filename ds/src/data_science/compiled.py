"""Exact compiled scoring: the fitted pipeline as plain arrays, built at save time, verified.

scikit-learn's `predict_proba` costs about a millisecond per call whatever the number of rows
(input checks, a thread pool) and ~0.4 µs per row and tree. `Engine` scores the same fitted
`Pipeline(CategoryCodes -> HistGradientBoostingClassifier)` from arrays saved with the version
(`scoring.npz`, no pickle), and must give the very same probabilities: a served label may never
differ from the one the evaluation reported. Two exact methods, chosen when the engine is built
(docs/compiled-scoring.md has the measurements):

- `lookup table` (used whenever it fits, `MAX_CELLS`): every split compares one feature with a
  threshold (`x <= t`, NaN to the side the tree learned), so each feature's thresholds cut its
  line into intervals, and two rows whose values fall into the same interval of every feature
  (or are both missing) take the same path through every tree. The table holds, per cell of
  that grid, the probability scikit-learn itself computed for one row of the cell; scoring is
  a binary search per feature and one read: pure NumPy, ~7 M rows/s and ~5 µs for one row
  on this machine, nothing to compile.
- `numba tree walk` (when the grid is too large): the trees' node arrays walked by a
  Numba-compiled loop, the same float64 comparisons, the leaf values added in the same order
  to the same baseline, then the same `scipy.special.expit`: bit-identical, ~0.5 M rows/s on one
  thread (scikit-learn ~0.4 M) and ~6 µs for one row, compiled once per process (`warm_up`,
  about a second).

Categories are encoded as `CategoryCodes` does (index among those seen in fit; unseen or
missing -> NaN), numbers are taken as given. `verify` compares an engine with the pipeline;
the model keeps an engine only when it is exact (max |Δp| <= 1e-12, no label flip at the
decision threshold) on the evaluation holdout and on `probe_frame`'s odd rows (every split
threshold and its float neighbours, NaN, ±0, ±1e300, ±inf, unseen and missing categories).
Binary classifiers with numeric splits only; anything else is refused with a `CompileError`.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.special import expit  # type: ignore[import-untyped]  # what scikit-learn's LogitLink uses
from sklearn.ensemble import HistGradientBoostingClassifier

from data_science.errors import DataScienceError

FILE = "scoring.npz"
FORMAT = 1
TABLE, WALK = "lookup table", "numba tree walk"
# Largest grid served by a table (8 bytes a cell: 16 MiB); the customer model needs ~40,000.
MAX_CELLS = 1 << 21
# Probabilities may differ from scikit-learn's by at most this (they are bit-identical in practice).
TOLERANCE = 1e-12
# Up to this many rows are encoded and looked up in plain Python (a request's row: no NumPy calls).
SMALL = 8
_LEAF = -1
_FLOAT64 = np.dtype(np.float64)  # made once: converting np.float64 costs a one-value array half its time

Floats = NDArray[np.float64]
Columns = Mapping[str, Any]


class CompileError(DataScienceError, ValueError):
    """A pipeline that cannot be compiled exactly, or a file that is no engine; says which and why."""


# --- encoding: CategoryCodes without pandas per row ----------------------------------------


@dataclass(frozen=True, eq=False)
class Encoder:
    """The features in the estimator's order; categories as `CategoryCodes` codes them."""

    features: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]]
    _codes: dict[str, dict[Any, float]] = field(init=False, repr=False)
    _index: dict[str, pd.Index] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_codes", {n: {c: float(i) for i, c in enumerate(cs)} for n, cs in self.categories.items()}
        )
        object.__setattr__(self, "_index", {n: pd.Index(list(cs), dtype=object) for n, cs in self.categories.items()})

    def column(self, name: str, values: Any) -> Floats:
        """One feature as float64: numbers as given; a category's index among those seen in fit,
        NaN for one never seen or missing (CategoryCodes' `get_indexer`: equality of str, and
        None and NaN match nothing; an object index, as the values are, skips pandas' 8x dearer
        inference of a string dtype)."""
        if name not in self.categories:
            return np.asarray(values, dtype=np.float64)
        if len(values) <= SMALL:
            lookup = self._codes[name]
            return np.array([lookup.get(v, math.nan) for v in values], dtype=np.float64)
        codes = self._index[name].get_indexer(pd.Index(np.asarray(values, dtype=object), dtype=object))
        return np.where(codes < 0, np.nan, codes).astype(np.float64)

    def row(self, columns: Columns) -> list[float] | None:
        """A one-row `columns` as the row `matrix` would hold, in plain Python (a request's row:
        no NumPy calls); None when `columns` is not one row of every feature."""
        row = []
        for name in self.features:
            column = columns.get(name)
            if not isinstance(column, np.ndarray | list | tuple) or len(column) != 1:
                return None
            value = column[0]
            lookup = self._codes.get(name)
            if lookup is not None:
                row.append(lookup.get(value, math.nan))
            else:
                row.append(math.nan if value is None else float(value))
        return row

    def matrix(self, columns: Columns) -> Floats:
        """The rows as a C-contiguous (features x rows) float64 array."""
        missing = [name for name in self.features if name not in columns]
        if missing:
            raise CompileError(f"missing feature column(s): {', '.join(missing)}")
        n = len(columns[self.features[0]])
        out = np.empty((len(self.features), n), dtype=np.float64)
        for j, name in enumerate(self.features):
            column = columns[name]
            if len(column) != n:
                raise CompileError(f"feature columns differ in length: {self.features[0]}={n}, {name}={len(column)}")
            out[j] = self.column(name, column)
        return out


# --- the two methods ------------------------------------------------------------------------


def _bin_of(thresholds: Sequence[float], x: float) -> int:
    """The cell of x along one feature: how many thresholds are below it; NaN has the last cell."""
    return len(thresholds) + 1 if x != x else bisect.bisect_left(thresholds, x)


@dataclass(frozen=True, eq=False)
class Table:
    """P(label = 1) per cell of the thresholds' grid, row-major over the features.

    Along feature f the cells are: b = number of thresholds strictly below x (0 .. K_f) for a
    number, K_f + 1 for NaN. `x <= t_j` holds exactly when b <= j, so every split decides the
    same for every value of a cell, and the cell's probability is its row's."""

    thresholds: tuple[Floats, ...]
    table: Floats
    name: ClassVar[str] = TABLE
    _strides: tuple[int, ...] = field(init=False, repr=False)
    _lists: tuple[list[float], ...] = field(init=False, repr=False)
    _cells: memoryview = field(init=False, repr=False)  # the table read as Python floats

    def __post_init__(self) -> None:
        shape = [len(t) + 2 for t in self.thresholds]
        strides = [int(np.prod(shape[f + 1 :], dtype=np.int64)) for f in range(len(shape))]
        object.__setattr__(self, "_strides", tuple(strides))
        object.__setattr__(self, "_lists", tuple([float(v) for v in t] for t in self.thresholds))
        object.__setattr__(self, "_cells", np.ascontiguousarray(self.table, dtype=np.float64).data)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(t) + 2 for t in self.thresholds)

    def proba(self, matrix: Floats) -> Floats:
        index = np.zeros(matrix.shape[1], dtype=np.intp)
        for f, thresholds in enumerate(self.thresholds):
            x = matrix[f]
            cells = np.searchsorted(thresholds, x, side="left")
            cells[np.isnan(x)] = len(thresholds) + 1
            index += cells * self._strides[f]
        return self.table.take(index)

    def proba_few(self, matrix: Floats) -> Floats:
        """`proba` for a few rows in plain Python (bisect on the same sorted thresholds): a
        request's row costs microseconds, not NumPy's per-call overhead."""
        return np.array([self.proba_row(row) for row in matrix.T.tolist()], dtype=np.float64)

    def proba_row(self, row: Sequence[float]) -> float:
        """One row's probability (its values in feature order), in plain Python."""
        index = 0
        for thresholds, stride, x in zip(self._lists, self._strides, row, strict=True):
            index += _bin_of(thresholds, x) * stride
        value: float = self._cells[index]
        return value

    def arrays(self) -> dict[str, NDArray[Any]]:
        return {"table": self.table}

    def summary(self) -> dict[str, Any]:
        return {"cells": int(self.table.size), "grid": list(self.shape)}


@dataclass(frozen=True, eq=False)
class Walk:
    """Every tree's nodes in one set of arrays; `roots[t]` is tree t's first node.

    An internal node splits on `feature[n]` at `threshold[n]`: to `left[n]` when x <= threshold,
    to `right[n]` when greater, by `missing_left[n]` when x is NaN; a leaf has feature -1 and
    adds `value[n]` to the raw score, which starts at `baseline`."""

    roots: NDArray[np.int32]
    feature: NDArray[np.int32]
    threshold: Floats
    missing_left: NDArray[np.uint8]
    left: NDArray[np.int32]
    right: NDArray[np.int32]
    value: Floats
    baseline: float
    name: ClassVar[str] = WALK

    def raw(self, matrix: Floats) -> Floats:
        """Raw scores (log-odds), as scikit-learn's `_raw_predict`."""
        result: Floats = kernel()(
            matrix,
            self.roots,
            self.feature,
            self.threshold,
            self.missing_left,
            self.left,
            self.right,
            self.value,
            self.baseline,
        )
        return result

    def proba(self, matrix: Floats) -> Floats:
        return np.asarray(expit(self.raw(matrix)), dtype=np.float64)

    def arrays(self) -> dict[str, NDArray[Any]]:
        return {
            "roots": self.roots,
            "feature": self.feature,
            "threshold": self.threshold,
            "missing_left": self.missing_left,
            "left": self.left,
            "right": self.right,
            "value": self.value,
            "baseline": np.array([self.baseline]),
        }

    def summary(self) -> dict[str, Any]:
        return {"trees": len(self.roots), "nodes": len(self.feature)}

    def validate(self, n_features: int) -> None:
        """Indices inside the arrays, every child after its parent in the same tree: every walk
        ends at a leaf and reads nothing outside the arrays."""
        n = len(self.feature)
        if any(len(getattr(self, a)) != n for a in ("threshold", "missing_left", "left", "right", "value")):
            raise CompileError("the walk's node arrays differ in length")
        if len(self.roots) == 0 or self.roots[0] != 0 or np.any(np.diff(self.roots) <= 0) or self.roots[-1] >= n:
            raise CompileError("the walk's tree roots are not increasing offsets into the node arrays")
        if np.any((self.feature < _LEAF) | (self.feature >= n_features)):
            raise CompileError(f"the walk splits on a feature outside 0..{n_features - 1}")
        tree = np.searchsorted(self.roots, np.arange(n), side="right") - 1
        internal = np.flatnonzero(self.feature != _LEAF)
        for name in ("left", "right"):
            child = getattr(self, name)[internal].astype(np.int64)
            if np.any((child <= internal) | (child >= n)) or np.any(tree[np.minimum(child, n - 1)] != tree[internal]):
                raise CompileError(f"the walk's `{name}` children leave their tree")
        if np.isnan(self.threshold[internal]).any() or not np.isfinite(self.baseline):
            raise CompileError("the walk has a NaN threshold or a non-finite baseline")


# --- the engine -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Engine:
    """A fitted pipeline's exact scorer: `proba(columns)` is its `predict_proba(...)[:, 1]`."""

    encoder: Encoder
    method: Table | Walk
    thresholds: tuple[Floats, ...]  # per feature, the sorted distinct split thresholds (codes for a category)
    trees: int

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def features(self) -> tuple[str, ...]:
        return self.encoder.features

    @classmethod
    def build(cls, pipeline: Any, max_cells: int | None = None) -> Engine:
        """From a fitted `Pipeline(CategoryCodes, HistGradientBoostingClassifier)`: a table
        when the grid has at most `max_cells` (default `MAX_CELLS`) cells, else the walk. A
        CompileError says why not."""
        prep, estimator = _steps(pipeline)
        features = tuple(str(n) for n in prep.feature_names_in_)
        categories = {str(n): tuple(str(c) for c in cs) for n, cs in prep.categories_.items()}
        if any(n not in features for n in categories):
            raise CompileError(
                f"categories for features the pipeline does not have: {sorted(set(categories) - set(features))}"
            )
        if estimator.n_features_in_ != len(features):
            raise CompileError(
                f"the estimator takes {estimator.n_features_in_} columns, the encoder makes {len(features)}"
            )
        walk = _walk_of(estimator, len(features))
        internal = walk.feature != _LEAF
        thresholds = tuple(np.unique(walk.threshold[internal & (walk.feature == f)]) for f in range(len(features)))
        encoder = Encoder(features, categories)
        cells = math.prod(len(t) + 2 for t in thresholds)
        method: Table | Walk = walk
        if cells <= (MAX_CELLS if max_cells is None else max_cells):
            method = Table(thresholds, _table(estimator, thresholds))
        return cls(encoder, method, thresholds, len(walk.roots))

    def proba(self, columns: Columns) -> Floats:
        """P(label = 1) per row of `columns` (one array or sequence per feature; categories as
        str, None or NaN for missing; numbers as float, NaN for missing)."""
        one = self.proba_one(columns)
        if one is not None:
            return np.array([one], _FLOAT64)
        matrix = self.encoder.matrix(columns)
        if matrix.shape[1] <= SMALL and isinstance(self.method, Table):
            return self.method.proba_few(matrix)
        return self.method.proba(matrix)

    def proba_one(self, columns: Columns) -> float | None:
        """`proba` of a one-row `columns` as a float, scored by the table in plain Python (a
        request's row: microseconds, no NumPy call); None for more rows or the walk."""
        if not isinstance(self.method, Table):
            return None
        row = self.encoder.row(columns)
        return None if row is None else self.method.proba_row(row)

    def warm_up(self) -> float:
        """Compile what the method needs (the walk's kernel, once per process); seconds spent."""
        if isinstance(self.method, Walk):
            started = time.perf_counter()
            kernel()
            return time.perf_counter() - started
        return 0.0

    def summary(self) -> dict[str, Any]:
        return {"engine": self.name, "trees": self.trees, **self.method.summary()}

    def check_matches(self, features: Sequence[str], categories: Mapping[str, Sequence[str]]) -> None:
        """The engine was built for these features and categories (the loaded pipeline's)."""
        if list(self.features) != list(features):
            raise CompileError(f"{FILE} was built for features {list(self.features)}, the model has {list(features)}")
        mine = {n: list(c) for n, c in self.encoder.categories.items()}
        theirs = {n: list(c) for n, c in categories.items()}
        if mine != theirs:
            raise CompileError(f"{FILE} was built for categories {mine}, the model has {theirs}")

    # --- the file -------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """One .npz without pickle: a JSON spec, the thresholds and the method's arrays."""
        spec = {
            "format": FORMAT,
            "engine": self.name,
            "features": list(self.features),
            "categories": {n: list(c) for n, c in self.encoder.categories.items()},
            "trees": self.trees,
        }
        arrays: dict[str, NDArray[Any]] = {"spec": np.array(json.dumps(spec))}
        arrays |= {f"thresholds_{f}": t for f, t in enumerate(self.thresholds)}
        arrays |= self.method.arrays()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stubs want one positional file
        with path.open("wb") as f:
            f.write(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Engine:
        """The engine saved at `path`; a CompileError says what is wrong with the file."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            spec = json.loads(str(arrays.pop("spec")))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise CompileError(f"{path.name} cannot be read: {type(exc).__name__}: {exc}") from None
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            found = spec.get("format") if isinstance(spec, dict) else None
            raise CompileError(f"{path.name} has format {found!r}; this code reads format {FORMAT}")
        try:
            return cls._from_arrays(spec, arrays)
        except CompileError as exc:
            raise CompileError(f"{path.name}: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CompileError(f"{path.name} is malformed: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_arrays(cls, spec: dict[str, Any], arrays: dict[str, NDArray[Any]]) -> Engine:
        features = tuple(str(n) for n in spec["features"])
        categories = {str(n): tuple(str(c) for c in cs) for n, cs in spec["categories"].items()}
        thresholds = tuple(_floats(arrays[f"thresholds_{f}"]) for f in range(len(features)))
        for name, t in zip(features, thresholds, strict=True):
            if np.isnan(t).any() or np.any(np.diff(t) <= 0):
                raise CompileError(f"the thresholds of {name} are not increasing numbers")
        method: Table | Walk
        if spec["engine"] == TABLE:
            method = Table(thresholds, _floats(arrays["table"]))
            if method.table.size != math.prod(method.shape):
                raise CompileError(f"a table of {method.table.size} cells for a grid of {math.prod(method.shape)}")
            if not np.all((method.table >= 0) & (method.table <= 1)):
                raise CompileError("the table holds values that are not probabilities")
        elif spec["engine"] == WALK:
            method = Walk(
                roots=np.ascontiguousarray(arrays["roots"], dtype=np.int32),
                feature=np.ascontiguousarray(arrays["feature"], dtype=np.int32),
                threshold=_floats(arrays["threshold"]),
                missing_left=np.ascontiguousarray(arrays["missing_left"], dtype=np.uint8),
                left=np.ascontiguousarray(arrays["left"], dtype=np.int32),
                right=np.ascontiguousarray(arrays["right"], dtype=np.int32),
                value=_floats(arrays["value"]),
                baseline=float(_floats(arrays["baseline"])[0]),
            )
            method.validate(len(features))
        else:
            raise CompileError(f"unknown engine {spec['engine']!r}")
        return cls(Encoder(features, categories), method, thresholds, int(spec["trees"]))


def _floats(values: Any) -> Floats:
    return np.ascontiguousarray(values, dtype=np.float64)


def _steps(pipeline: Any) -> tuple[Any, HistGradientBoostingClassifier]:
    """The encoder and the estimator of a fitted two-step pipeline, or a CompileError."""
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        raise CompileError("a fitted Pipeline(CategoryCodes, HistGradientBoostingClassifier) is needed")
    prep, estimator = steps[0][1], steps[1][1]
    if not (hasattr(prep, "categories_") and hasattr(prep, "feature_names_in_")):
        raise CompileError(f"the first step ({type(prep).__name__}) is not a fitted CategoryCodes")
    if not isinstance(estimator, HistGradientBoostingClassifier) or not hasattr(estimator, "_predictors"):
        raise CompileError(f"the last step ({type(estimator).__name__}) is not a fitted HistGradientBoostingClassifier")
    classes = getattr(estimator, "classes_", [])
    if len(classes) != 2 or estimator.n_trees_per_iteration_ != 1:
        raise CompileError(f"binary classifiers only: this one has {len(classes)} classes")
    if getattr(estimator, "_preprocessor", None) is not None:
        raise CompileError(
            "the estimator encodes categories itself (categorical_features): native categorical splits are not "
            "compiled, encode categories as numbers first"
        )
    if type(estimator._loss).__name__ != "HalfBinomialLoss":
        raise CompileError(f"the estimator's loss is {type(estimator._loss).__name__}, not the binary log loss")
    return prep, estimator


def _walk_of(estimator: HistGradientBoostingClassifier, n_features: int) -> Walk:
    """The estimator's trees (`_predictors`' node records) as one set of flat arrays."""
    nodes = [per_iteration[0].nodes for per_iteration in estimator._predictors]
    if not nodes:
        raise CompileError("the estimator has no trees")
    if any(n["is_categorical"][~n["is_leaf"].astype(bool)].any() for n in nodes):
        raise CompileError("native categorical splits are not compiled: encode categories as numbers first")
    sizes = np.array([len(n) for n in nodes])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate(nodes)
    shift = np.repeat(offsets, sizes)
    leaf = flat["is_leaf"].astype(bool)
    feature = flat["feature_idx"].astype(np.int32)
    feature[leaf] = _LEAF
    baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).ravel()
    walk = Walk(
        roots=offsets.astype(np.int32),
        feature=feature,
        threshold=flat["num_threshold"].astype(np.float64),
        missing_left=flat["missing_go_to_left"].astype(np.uint8),
        left=np.where(leaf, 0, flat["left"].astype(np.int64) + shift).astype(np.int32),
        right=np.where(leaf, 0, flat["right"].astype(np.int64) + shift).astype(np.int32),
        value=flat["value"].astype(np.float64),
        # scikit-learn starts from zeros and adds the baseline: 0.0 + b (-0.0 becomes 0.0).
        baseline=0.0 + float(baseline[0]),
    )
    walk.validate(n_features)
    return walk


def _representatives(thresholds: Floats) -> Floats:
    """One value per cell along a feature: each threshold (cell b holds (t_{b-1}, t_b]), one
    just above the last, and NaN."""
    above = np.nextafter(thresholds[-1], np.inf) if len(thresholds) else 0.0
    return np.concatenate([thresholds, [above, np.nan]])


def _table(estimator: HistGradientBoostingClassifier, thresholds: tuple[Floats, ...], chunk: int = 1 << 18) -> Floats:
    """scikit-learn's own P(label = 1) for one row of every cell, in cell order."""
    values = [_representatives(t) for t in thresholds]
    shape = tuple(len(v) for v in values)
    cells = math.prod(shape)
    out = np.empty(cells, dtype=np.float64)
    for start in range(0, cells, chunk):
        index = np.unravel_index(np.arange(start, min(start + chunk, cells)), shape)
        rows = np.column_stack([v[i] for v, i in zip(values, index, strict=True)])
        out[start : start + len(rows)] = estimator.predict_proba(rows)[:, 1]
    return out


# --- the compiled walk ------------------------------------------------------------------------

_kernel: Any = None
_kernel_lock = threading.Lock()


def _walk_rows(columns, roots, feature, threshold, missing_left, left, right, value, baseline):  # type: ignore[no-untyped-def]  # compiled by numba
    # Tree-major (a tree's nodes stay in cache while every row goes through it); per row the
    # leaves are added in tree order to the baseline, as scikit-learn adds them.
    n = columns.shape[1]
    out = np.full(n, baseline)
    for t in range(roots.shape[0]):
        root = roots[t]
        for i in range(n):
            node = root
            f = feature[node]
            while f >= 0:
                x = columns[f, i]
                if x <= threshold[node]:
                    node = left[node]
                elif np.isnan(x):
                    node = left[node] if missing_left[node] else right[node]
                else:
                    node = right[node]
                f = feature[node]
            out[i] += value[node]
    return out


def kernel() -> Any:
    """The Numba-compiled walk: compiled on first use in a process, for one signature (no
    on-disk cache: docs/compiled-scoring.md says why); single-threaded, releases the GIL."""
    global _kernel
    with _kernel_lock:
        if _kernel is None:
            import numba

            signature = (
                "float64[::1](float64[:, ::1], int32[::1], int32[::1], float64[::1], uint8[::1], int32[::1], "
                "int32[::1], float64[::1], float64)"
            )
            _kernel = numba.njit(signature, nogil=True, cache=False)(_walk_rows)
        return _kernel


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """An engine against scikit-learn on the same rows."""

    rows: int
    max_abs_diff: float
    label_flips: int
    bit_identical: bool
    threshold: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= TOLERANCE and self.label_flips == 0

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            # None: a NaN where scikit-learn has a number (JSON has no infinity)
            "max_abs_diff": self.max_abs_diff if math.isfinite(self.max_abs_diff) else None,
            "label_flips": self.label_flips,
            "bit_identical": self.bit_identical,
            "threshold": self.threshold,
            "tolerance": TOLERANCE,
            "passed": self.passed,
        }

    def why_not(self, where: str) -> str:
        return (
            f"differs from scikit-learn on {where} ({self.rows:,} rows): max |Δp| {self.max_abs_diff:.3g} "
            f"(tolerance {TOLERANCE:g}), {self.label_flips} label flip(s) at threshold {self.threshold:.6g}"
        )


def columns_of(frame: pd.DataFrame, features: Sequence[str]) -> dict[str, NDArray[Any]]:
    return {name: frame[name].to_numpy() for name in features}


def verify(
    engine: Engine, pipeline: Any, features: pd.DataFrame, threshold: float, one_by_one: int = 200
) -> Verification:
    """The engine's probabilities against `pipeline.predict_proba` on `features` (all rows at
    once, and the first `one_by_one` rows one at a time: a request's path)."""
    names = list(engine.features)
    expected = np.asarray(pipeline.predict_proba(features[names])[:, 1], dtype=np.float64)
    columns = columns_of(features, names)
    got = engine.proba(columns)
    singles = min(one_by_one, len(features))
    one = np.array([engine.proba({n: c[i : i + 1] for n, c in columns.items()})[0] for i in range(singles)])
    both_got = np.concatenate([got, one])
    both_expected = np.concatenate([expected, expected[:singles]])
    diff = np.abs(both_got - both_expected)
    diff[np.isnan(diff) & ~(np.isnan(both_got) & np.isnan(both_expected))] = np.inf
    flips = int(np.count_nonzero((both_got >= threshold) != (both_expected >= threshold)))
    return Verification(
        rows=len(features),
        max_abs_diff=float(np.nanmax(diff)) if diff.size else 0.0,
        label_flips=flips,
        bit_identical=bool(np.array_equal(both_got, both_expected, equal_nan=True)),
        threshold=float(threshold),
    )


def probe_frame(engine: Engine, rows: int, seed: int = 0) -> pd.DataFrame:
    """Rows of odd values, drawn at random per feature: every split threshold and its float
    neighbours, NaN, ±0, ±1, ±1e300, ±inf for a number; every known category, one never seen,
    an empty string and None for a category. Where a compiled scorer would go wrong first."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for name, thresholds in zip(engine.features, engine.thresholds, strict=True):
        if name in engine.encoder.categories:
            values: list[Any] = [*engine.encoder.categories[name], "never-seen", "", None]
            column = np.empty(rows, dtype=object)
            column[:] = [values[i] for i in rng.integers(0, len(values), rows)]
            data[name] = column
        else:
            odd = [np.nan, 0.0, -0.0, 1.0, -1.0, 1e300, -1e300, np.inf, -np.inf]
            pool = np.concatenate(
                [thresholds, np.nextafter(thresholds, np.inf), np.nextafter(thresholds, -np.inf), odd]
            )
            data[name] = pool[rng.integers(0, len(pool), rows)]
    return pd.DataFrame(data)
