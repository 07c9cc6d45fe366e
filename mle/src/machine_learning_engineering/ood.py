"""The out-of-distribution gate: is a request like the rows its model was trained on?

A model answers for any input its request model admits, but it learned only from what its
training rows held. The gate stands in front of it: fitted at training time from the training
rows (`OODGate.fit`), saved in the version directory (`ood.npz`, in the version's manifest),
loaded and verified with the version, and asked about every row before the model scores it.
It is model-agnostic: it reads the model's `feature_schema` (numeric or categorical) and the
training frame, nothing else.

Each row gets a `Verdict`: `in_distribution` and the findings behind it, each naming its
features and saying why:

- range: a number outside the [min, max] seen in training (`attr_a=12 outside [1, 5] seen in
  training`), or any value of a feature that was always missing in training;
- category: a value never seen in training (`attr_b='zz' not seen in training`);
- pair: two values that never occurred together in training, each feature cut into its
  training deciles (numbers) or categories (`plan='gold' with age=70: never together in
  training (no row had plan='gold' and age in (64, 80])`). Checked for pairs whose training
  rows fill the cells densely enough (`MIN_ROWS_PER_CELL` on average) that an empty cell means
  something;
- combination: an isolation forest (scikit-learn's `IsolationForest`, fitted on the training
  rows) isolates the row faster than all but `FLAG_RATE` of the training rows: a combination
  that is rare in training, in any number of features.

Missing values are legal inputs (the model handles them) and never a finding: pairs with a
missing value are skipped, and the forest sees a missing number as the training median and a
missing category as the most frequent one, so a row is judged on the values it has. The forest
also sees out-of-range numbers clipped to the training range and unseen categories as the most
frequent one: it judges combinations, not values the other checks already named.

Speed: scikit-learn scores one row through 100 trees in milliseconds (Python work per tree).
The gate checks validated columns (`check_columns`: numbers float64 with NaN, categories str
or None; `check` and `check_frame` turn rows and frames into columns first) in one
Numba-compiled pass per request: ranges, categories, bins and pairs, then the forest, laid
out as complete binary trees walked level by level for all trees at once (the same float32
comparisons and the same leaf values, added in the same order as scikit-learn's
`score_samples`: equal to it within 1e-12, 1e-16 in practice). A row costs about a
microsecond and a half; reasons are written in Python for flagged rows only. The kernels
compile on first use in a process (a few seconds, when a version is loaded, off the request
path; no on-disk cache, which a read-only image could not keep anyway). Fitting needs
scikit-learn (installed wherever training runs); checking needs NumPy and Numba only.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations, repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from machine_learning_engineering.errors import MLEError
from machine_learning_engineering.schema import FeatureSchema

GATE_FILE = "ood.npz"
REFERENCE_FILE = "reference.csv"
FORMAT = 1
# The isolation forest's threshold flags this share of the training rows.
FLAG_RATE = 0.01
TREES = 100
# Numbers are cut into training quantiles for the pair check: as many as the training rows
# allow (about MIN_ROWS_PER_CELL rows per cell of a pair of numbers), within these bounds.
MIN_BINS, MAX_BINS = 4, 20
# A pair of features is checked only when its training rows number at least this many per
# cell on average: with fewer, ordinary rows would often land in cells that are empty by chance.
MIN_ROWS_PER_CELL = 10
# A cell of a pair holding fewer than this share of the pair's training rows is a rare
# combination (an empty one: never seen together).
RARE_SHARE = 0.001
# Training rows scored to place the threshold (a seeded sample beyond this).
MAX_THRESHOLD_ROWS = 200_000
# The compiled walk lays each tree out complete to the forest's depth: 16 bytes per slot and
# tree. A forest needing more than this is refused (scikit-learn's default 256 samples per
# tree give depth 8: 4 KiB per tree).
MAX_FOREST_BYTES = 256 << 20
# From this many rows a check lets other threads run Python meanwhile (it releases the GIL);
# a smaller one is over before another thread would have got going, and taking the GIL back
# could wait for that thread's whole time slice.
NOGIL_ROWS = 256
REFERENCE_ROWS = 10_000
NO_GATE_REASON = "no gate in this version"
# Reference columns beside the features.
LABEL, PREDICTION, PROBABILITY = "label", "prediction", "probability"

Matrix = np.ndarray[Any, np.dtype[np.float64]]


class GateError(MLEError, ValueError):
    """An OOD gate that cannot be fitted or loaded; the message says why."""


class Finding(NamedTuple):
    """One reason a row is out of distribution and the features it names (none: the forest's
    verdict on the whole row)."""

    features: tuple[str, ...]
    reason: str


class Verdict(NamedTuple):
    """A row's verdict: True (in distribution), False (with findings), None (no gate)."""

    in_distribution: bool | None
    findings: tuple[Finding, ...] = ()

    @property
    def reasons(self) -> list[str]:
        return [f.reason for f in self.findings]


IN_DISTRIBUTION = Verdict(True)
NO_GATE = Verdict(None, (Finding((), NO_GATE_REASON),))


def _missing(value: Any) -> bool:
    return value is None or value != value  # None, or NaN (a frame's missing number or category)


def _number(value: float, integer: bool) -> str:
    value = float(value)
    return str(int(value)) if integer and value.is_integer() and abs(value) < 2**63 else repr(value)


def _category(value: Any) -> str:
    text = str(value)
    return repr(text) if len(text) <= 60 else repr(text[:60]) + "..."


def average_path_length(n: float) -> float:
    """c(n): the average path length of an unsuccessful search in a binary tree of n points
    (the isolation forest's normaliser; scikit-learn's `_average_path_length`)."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


@dataclass(frozen=True)
class Forest:
    """A fitted isolation forest as flat node arrays, scored by a compiled walk.

    `children[node]` holds the (left, right) node indices over all trees; a leaf points to
    itself, so `depth` steps from each root reach every leaf. `value[leaf]` is the leaf's
    path length as scikit-learn counts it (depth + c(training samples in the leaf) - 1).
    `score` equals `-IsolationForest.score_samples`: in (0, 1], higher is more anomalous.
    """

    feature: np.ndarray[Any, np.dtype[np.intp]]
    threshold: Matrix
    children: np.ndarray[Any, np.dtype[np.intp]]
    value: Matrix
    roots: np.ndarray[Any, np.dtype[np.intp]]
    depth: int
    denominator: float
    n_features: int
    # What the compiled walk reads: each tree as a complete binary tree of `depth` levels in
    # heap order (slot j's children are 2j+1 and 2j+2), so a walk is `depth` steps of
    # arithmetic with no pointers to chase and no early exits, and all trees of a row advance
    # together. A leaf above the bottom level passes every row to the left (threshold +inf)
    # and its value fills the bottom slots below it. Thresholds are float32 (the largest
    # float32 not above scikit-learn's float64 one: for a float32 value, `x > it` decides
    # exactly as scikit-learn's float32-against-float64 comparison).
    _split_feature: np.ndarray[Any, np.dtype[np.int32]] = field(init=False, repr=False, compare=False)
    _split_threshold: np.ndarray[Any, np.dtype[np.float32]] = field(init=False, repr=False, compare=False)
    _leaf_value: Matrix = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        trees, depth = len(self.roots), self.depth
        if trees * 16 * 2**depth > MAX_FOREST_BYTES:
            raise GateError(f"its forest of {trees} trees of depth {depth} is too large to score")
        threshold32 = self.threshold.astype(np.float32)
        above = threshold32.astype(np.float64) > self.threshold
        threshold32[above] = np.nextafter(threshold32[above], np.float32(-np.inf))
        split_feature = np.zeros((trees, 2**depth - 1), dtype=np.int32)
        split_threshold = np.full((trees, 2**depth - 1), np.inf, dtype=np.float32)
        node = self.roots.astype(np.intp)[:, None]  # the nodes of one level, per tree, left to right
        for level in range(depth):
            slots = slice(2**level - 1, 2 ** (level + 1) - 1)
            left, right = self.children[node, 0], self.children[node, 1]
            leaf = left == node
            split_feature[:, slots] = np.where(leaf, 0, self.feature[node])
            split_threshold[:, slots] = np.where(leaf, np.float32(np.inf), threshold32[node])
            node = np.stack([left, np.where(leaf, node, right)], axis=-1).reshape(trees, -1)
        object.__setattr__(self, "_split_feature", split_feature)
        object.__setattr__(self, "_split_threshold", split_threshold)
        object.__setattr__(self, "_leaf_value", np.ascontiguousarray(self.value[node], dtype=np.float64))

    @classmethod
    def from_sklearn(cls, forest: Any, n_features: int) -> Forest:
        """The node arrays of a fitted `sklearn.ensemble.IsolationForest` (all features per tree)."""
        if forest._max_features != n_features:
            raise GateError("the isolation forest must use every feature in every tree (max_features=1.0)")
        features, thresholds, children, values, roots = [], [], [], [], []
        offset = 0
        for tree, path_lengths, depths in zip(
            (e.tree_ for e in forest.estimators_),
            forest._average_path_length_per_tree,
            forest._decision_path_lengths,
            strict=True,
        ):
            n = tree.node_count
            leaf = tree.children_left == -1
            index = np.arange(n)
            features.append(np.where(leaf, 0, tree.feature))
            thresholds.append(np.where(leaf, np.inf, tree.threshold))
            left = np.where(leaf, index, tree.children_left) + offset
            right = np.where(leaf, index, tree.children_right) + offset
            children.append(np.column_stack([left, right]))
            values.append(depths + path_lengths - 1.0)  # as scikit-learn adds them per tree
            roots.append(offset)
            offset += n
        max_samples = forest.max_samples_
        return cls(
            feature=np.concatenate(features).astype(np.intp),
            threshold=np.concatenate(thresholds).astype(np.float64),
            children=np.concatenate(children).astype(np.intp),
            value=np.concatenate(values).astype(np.float64),
            roots=np.array(roots, dtype=np.intp),
            depth=max(e.tree_.max_depth for e in forest.estimators_),
            denominator=len(forest.estimators_) * average_path_length(max_samples),
            n_features=n_features,
        )

    def score(self, x: Matrix) -> Matrix:
        """Anomaly score per row of `x` (rows x features): 2 ** -(mean path length / c(max_samples))."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # scikit-learn's trees read float32 too
        if x32.ndim != 2 or x32.shape[1] != self.n_features:
            raise GateError(f"the forest scores rows of {self.n_features} features, not an array of shape {x32.shape}")
        scores = np.empty(len(x32), dtype=np.float64)
        if len(x32):
            self.walk(x32, scores)
        return scores

    def walk(self, x32: np.ndarray[Any, np.dtype[np.float32]], out: Matrix) -> None:
        """`score` into `out` for float32 rows (C order) of `n_features` values (no checks)."""
        if self.denominator == 0:  # one training row: scikit-learn scores everything 1
            out[:] = 1.0
            return
        _compiled("walk")(x32, self._split_feature, self._split_threshold, self._leaf_value, self.depth,
                          self.denominator, out)  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        return {
            "forest_feature": self.feature,
            "forest_threshold": self.threshold,
            "forest_children": self.children,
            "forest_value": self.value,
            "forest_roots": self.roots,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray[Any, Any]], spec: Mapping[str, Any]) -> Forest:
        """Rebuilt from saved arrays, checked so that scoring can neither index out of bounds
        nor stop short of a leaf."""
        try:
            feature = np.asarray(arrays["forest_feature"], dtype=np.intp)
            threshold = np.asarray(arrays["forest_threshold"], dtype=np.float64)
            children = np.asarray(arrays["forest_children"], dtype=np.intp)
            value = np.asarray(arrays["forest_value"], dtype=np.float64)
            roots = np.asarray(arrays["forest_roots"], dtype=np.intp)
            depth, denominator, n_features = int(spec["depth"]), float(spec["denominator"]), int(spec["n_features"])
        except (KeyError, TypeError, ValueError) as exc:
            raise GateError(f"its forest is incomplete ({type(exc).__name__}: {exc})") from None
        n = len(feature)
        if not (
            n
            and threshold.shape == value.shape == (n,)
            and children.shape == (n, 2)
            and roots.ndim == 1
            and len(roots)
            and 0 <= depth <= 64
            and math.isfinite(denominator)
            and denominator >= 0
        ):
            raise GateError("its forest arrays do not fit together")
        if (children < 0).any() or (children >= n).any() or (roots < 0).any() or (roots >= n).any():
            raise GateError("its forest points at nodes it does not have")
        if (feature < 0).any() or (feature >= n_features).any():
            raise GateError(f"its forest splits on features beyond its {n_features}")
        reached = np.unique(roots)
        for _ in range(depth):
            reached = np.unique(children[reached].ravel())
        if not (children[reached] == reached[:, None]).all():
            raise GateError(f"its forest has paths longer than its depth {depth}")
        if not np.isfinite(value[reached]).all():
            raise GateError("its forest has leaves without a path length")
        return cls(feature, threshold, children, value, roots, depth, denominator, n_features)


@dataclass(frozen=True)
class _Feature:
    """One feature as `check` walks it: its column in the forest's input, how a value is
    judged, filled in and binned."""

    name: str
    column: int
    kind: str
    fill: float  # the forest's value for a missing (or unseen, or never-seen) value
    low: float | None = None  # numbers: the training range (None: always missing in training)
    high: float | None = None
    range_text: str = ""
    edges: tuple[float, ...] = ()  # numbers: inner bin edges; bin = how many edges lie below the value
    codes: dict[str, int] = field(default_factory=dict)  # categories: value -> code (= bin)
    # categories: value -> code as the compiled check reads it (None: missing, NaN)
    lookup: dict[Any, float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def integer(self) -> bool:
        return self.kind == "integer"

    @property
    def bins(self) -> int:
        return len(self.codes) if self.kind == "category" else len(self.edges) + 1

    @property
    def edges_array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.asarray(self.edges, dtype=np.float64)

    def never_seen(self, value: Any) -> Finding:
        return Finding((self.name,), f"{self.name}={_number(value, self.integer)}: no value seen in training")

    def out_of_range(self, value: Any) -> Finding:
        shown = _number(value, self.integer)
        return Finding((self.name,), f"{self.name}={shown} outside {self.range_text} seen in training")

    def unseen(self, value: Any) -> Finding:
        return Finding((self.name,), f"{self.name}={_category(value)} not seen in training")

    def bin_text(self, b: int) -> str:
        """The values of bin `b`, for a finding."""
        if self.kind == "category":
            return f"{self.name}={_category(next(c for c, code in self.codes.items() if code == b))}"
        assert self.low is not None and self.high is not None
        points = [self.low, *self.edges, self.high]
        low, high = _number(points[b], self.integer), _number(points[b + 1], self.integer)
        return f"{self.name} in {'[' if b == 0 else '('}{low}, {high}]"


@dataclass(frozen=True)
class _Pair:
    first: _Feature
    second: _Feature
    cells: np.ndarray[Any, np.dtype[np.int64]]  # sorted: first's bin * second's bins + second's bin
    counts: np.ndarray[Any, np.dtype[np.int64]]  # training rows per cell
    rows: int  # training rows with both values
    rare_below: int  # a cell with fewer training rows is a rare combination (none: never seen)
    common: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "common", frozenset(self.cells[self.counts >= self.rare_below].tolist()))

    def count(self, cell: int) -> int:
        i = int(np.searchsorted(self.cells, cell))
        return int(self.counts[i]) if i < len(self.cells) and self.cells[i] == cell else 0

    def finding(self, a: Any, b: Any, bin_a: int, bin_b: int) -> Finding:
        together = f"{self._show(self.first, a)} with {self._show(self.second, b)}"
        where = f"{self.first.bin_text(bin_a)} and {self.second.bin_text(bin_b)}"
        count = self.count(bin_a * self.second.bins + bin_b)
        if count == 0:
            reason = f"{together}: never together in training (no row had {where})"
        else:
            reason = f"{together}: rarely together in training ({count:,} of {self.rows:,} rows had {where})"
        return Finding((self.first.name, self.second.name), reason)

    @staticmethod
    def _show(f: _Feature, value: Any) -> str:
        return f"{f.name}={_category(value) if f.kind == 'category' else _number(value, f.integer)}"


class OODGate:
    """Ranges, categories, pairs seen together and an isolation forest with its threshold:
    `spec` (JSON-able) and the arrays (the forest, the pairs' cells) hold all of it."""

    def __init__(self, spec: dict[str, Any], forest: Forest, cells: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.spec = spec
        self.forest = forest
        self.cells = dict(cells)
        self.features: dict[str, str] = dict(spec["features"])
        self.threshold = float(spec["detector"]["threshold"])
        self.training_flag_rate = float(spec["detector"]["training_flag_rate"])
        if forest.n_features != len(self.features):
            raise GateError(f"its forest has {forest.n_features} features, its declaration {len(self.features)}")
        self._features = _compile(spec)
        by_name = {f.name: f for f in self._features}
        pairs = []
        for a, b, rows, rare_below in spec["pairs"]:
            if f"pair:{a}:{b}" not in self.cells or f"count:{a}:{b}" not in self.cells:
                raise GateError(f"it lists the pair {a}, {b} but has no cells for it")
            seen: np.ndarray[Any, np.dtype[np.int64]] = np.asarray(self.cells[f"pair:{a}:{b}"], dtype=np.int64)
            counts: np.ndarray[Any, np.dtype[np.int64]] = np.asarray(self.cells[f"count:{a}:{b}"], dtype=np.int64)
            if seen.ndim != 1 or len(seen) == 0 or bool((np.diff(seen) <= 0).any()) or seen.shape != counts.shape:
                raise GateError(f"its cells for the pair {a}, {b} are not a sorted list with counts")
            pairs.append(_Pair(by_name[a], by_name[b], seen, counts, int(rows), int(rare_below)))
        self._pairs = tuple(pairs)
        self._numeric = tuple(f for f in self._features if f.kind != "category")
        self._categorical = tuple(f for f in self._features if f.kind == "category")
        self._combination = (
            "unusual combination of values: isolation score {score:.3f} above {threshold:.3f}, "
            f"which {self.training_flag_rate:.1%} of training rows exceed"
        )
        self._arrays = _CheckArrays.of(self._features, self._pairs)
        self._by_column = sorted(self._features, key=lambda f: f.column)

    # --- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        schema: FeatureSchema,
        data: pd.DataFrame,
        *,
        flag_rate: float = FLAG_RATE,
        trees: int = TREES,
        seed: int = 0,
    ) -> OODGate:
        """Fit from training rows (any frame holding the schema's features; validated here)."""
        from sklearn.ensemble import IsolationForest  # training only: serving needs NumPy alone

        if not 0 < flag_rate < 1:
            raise GateError(f"flag_rate {flag_rate} must be between 0 and 1")
        clean = schema.validate(data)
        bins = min(MAX_BINS, max(MIN_BINS, int(math.sqrt(len(clean) / MIN_ROWS_PER_CELL))))
        spec: dict[str, Any] = {
            "format": FORMAT,
            "features": schema.kinds,
            "ranges": {},
            "categories": {},
            "edges": {},
            "fill": {},
        }
        for feature in schema:
            values = clean[feature.name]
            if feature.kind == "category":
                counts = values.value_counts(dropna=True)
                categories = sorted(str(c) for c in counts.index)
                spec["categories"][feature.name] = categories
                mode = str(counts.index[0]) if len(counts) else None  # value_counts: most frequent first
                spec["fill"][feature.name] = float(categories.index(mode)) if mode is not None else 0.0
            else:
                present = values.dropna().to_numpy(dtype=np.float64)
                if len(present):
                    spec["ranges"][feature.name] = [float(present.min()), float(present.max())]
                    inner = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
                    spec["edges"][feature.name] = [
                        float(e) for e in np.unique(inner) if present.min() <= e < present.max()
                    ]
                    spec["fill"][feature.name] = float(np.median(present))
                else:
                    spec["ranges"][feature.name] = None
                    spec["edges"][feature.name] = []
                    spec["fill"][feature.name] = 0.0
        compiled = _compile(spec)
        cut = _bins(compiled, clean)
        spec["pairs"], cells = [], {}
        rare = np.zeros(len(clean), dtype=bool)  # training rows in a rare cell of some pair
        for a, b in combinations(compiled, 2):
            both = (cut[a.name] >= 0) & (cut[b.name] >= 0)
            if a.bins < 2 or b.bins < 2 or both.sum() < MIN_ROWS_PER_CELL * a.bins * b.bins:
                continue
            keys = np.where(both, cut[a.name] * b.bins + cut[b.name], -1)
            seen, inverse, in_cell = np.unique(keys[both], return_inverse=True, return_counts=True)
            pair_rows = int(both.sum())
            rare_below = max(1, math.ceil(RARE_SHARE * pair_rows))
            rare[np.flatnonzero(both)[in_cell[inverse] < rare_below]] = True
            spec["pairs"].append([a.name, b.name, pair_rows, rare_below])
            cells[f"pair:{a.name}:{b.name}"] = seen.astype(np.int64)
            cells[f"count:{a.name}:{b.name}"] = in_cell.astype(np.int64)
        # The forest's input, built as `check` builds it; the forest; its threshold.
        matrix = _matrix(compiled, clean)
        estimator = IsolationForest(n_estimators=trees, max_samples="auto", random_state=seed).fit(matrix)
        forest = Forest.from_sklearn(estimator, len(schema))
        pick = np.arange(len(matrix))
        if len(pick) > MAX_THRESHOLD_ROWS:
            pick = np.sort(np.random.default_rng(seed).choice(len(pick), MAX_THRESHOLD_ROWS, replace=False))
        scores = forest.score(matrix[pick])
        threshold = float(np.quantile(scores, 1.0 - flag_rate))
        spec["forest"] = {"depth": forest.depth, "denominator": forest.denominator, "n_features": forest.n_features}
        spec["detector"] = {
            "kind": "isolation forest (scikit-learn IsolationForest, scored from its node arrays)",
            "trees": trees,
            "max_samples": int(estimator.max_samples_),
            "seed": seed,
            "threshold": threshold,
            "flag_rate_target": flag_rate,
            "training_flag_rate": float(np.mean(scores > threshold)),
            # every check at once (ranges and categories never flag a training row; rare pairs may)
            "training_flag_rate_all_checks": float(np.mean((scores > threshold) | rare[pick])),
            "training_rows": len(clean),
            "threshold_rows": len(pick),
        }
        return cls(spec, forest, cells)

    # --- checking ----------------------------------------------------------------------------

    def check(self, rows: Sequence[Mapping[str, Any]]) -> list[Verdict]:
        """A verdict per row of validated values (None or NaN for missing)."""
        columns: dict[str, np.ndarray[Any, Any]] = {}
        for f in self._features:
            values = [row[f.name] for row in rows]
            if f.kind == "category":
                columns[f.name] = np.empty(len(values), dtype=object)
                columns[f.name][:] = values
            else:
                columns[f.name] = np.array([np.nan if _missing(v) else v for v in values], dtype=np.float64)
        return self.check_columns(columns)

    def check_frame(self, frame: pd.DataFrame) -> list[Verdict]:
        """A verdict per row of a validated frame holding the features."""
        return self.check_columns(self._frame_columns(frame))

    def check_columns(self, columns: Mapping[str, Any]) -> list[Verdict]:
        """A verdict per row of validated columns (`model.Columns`: numbers float64 with NaN for
        missing, categories str with None or NaN for missing): the API's and batch scoring's path.
        One compiled pass judges every row; findings are written for the flagged rows only."""
        run = self._run(columns)
        if run is None:
            return []
        how_many, flagged, status, bins, rare, scores = run
        verdicts = [IN_DISTRIBUTION] * len(flagged)
        if not how_many:
            return verdicts
        for i in np.flatnonzero(flagged).tolist():
            verdicts[i] = Verdict(False, self._findings(i, columns, status, bins, rare, float(scores[i])))
        return verdicts

    def out_of_distribution(self, columns: Mapping[str, Any]) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """True per row of validated columns that `check_columns` would flag; no reasons written."""
        run = self._run(columns)
        return np.zeros(0, dtype=bool) if run is None else run[1].view(np.bool_)

    def _run(self, columns: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """(how many rows are flagged, flagged, status, bins, rare, scores) or None for no rows."""
        n = len(columns[self._features[0].name])
        if n == 0:
            return None
        if n == 1:  # a /predict: one list, one array
            values = np.array([[_code(f, columns[f.name][0]) for f in self._by_column]], dtype=np.float64)
        else:
            values = np.empty((n, len(self._features)), dtype=np.float64)
            for f in self._features:
                if f.kind == "category":
                    values[:, f.column] = _codes(f, columns[f.name])
                else:
                    values[:, f.column] = columns[f.name]
        a = self._arrays
        flagged = np.empty(n, dtype=np.uint8)
        status = np.empty((n, len(self._features)), dtype=np.int8)
        bins = np.empty((n, len(self._features)), dtype=np.int64)
        rare = np.empty((n, len(self._pairs)), dtype=np.uint8)
        scores = np.empty(n, dtype=np.float64)
        forest = self.forest
        how_many = _compiled("check" if n < NOGIL_ROWS else "check_nogil")(
            values, a.kind, a.low, a.high, a.fill, a.edges, a.n_edges, a.pairs, a.cells, a.counts,
            forest._split_feature, forest._split_threshold, forest._leaf_value, forest.depth, forest.denominator,
            self.threshold, flagged, status, bins, rare, scores,
        )  # fmt: skip
        return how_many, flagged, status, bins, rare, scores

    def _findings(
        self,
        i: int,
        columns: Mapping[str, Any],
        status: np.ndarray[Any, Any],
        bins: np.ndarray[Any, Any],
        rare: np.ndarray[Any, Any],
        score: float,
    ) -> tuple[Finding, ...]:
        """Row i's findings, in a fixed order: numbers, categories, pairs, the forest."""
        found: list[Finding] = []
        for f in self._numeric:
            if status[i, f.column] == _NEVER_SEEN:
                found.append(f.never_seen(columns[f.name][i]))
            elif status[i, f.column] == _OUT_OF_RANGE:
                found.append(f.out_of_range(columns[f.name][i]))
        for f in self._categorical:
            if status[i, f.column] == _UNSEEN:
                found.append(f.unseen(columns[f.name][i]))
        for p, pair in enumerate(self._pairs):
            if rare[i, p]:
                a, b = pair.first, pair.second
                found.append(
                    pair.finding(columns[a.name][i], columns[b.name][i], int(bins[i, a.column]), int(bins[i, b.column]))
                )
        if score > self.threshold:
            found.append(Finding((), self._combination.format(score=score, threshold=self.threshold)))
        return tuple(found)

    def _frame_columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray[Any, Any]]:
        return {
            f.name: frame[f.name].to_numpy(dtype=object if f.kind == "category" else np.float64) for f in self._features
        }

    def scores(self, frame: pd.DataFrame) -> Matrix:
        """The forest's anomaly score per row of a validated frame (for analysis)."""
        return self.forest.score(_matrix(self._features, frame))

    def flag_rate(self, frame: pd.DataFrame) -> float:
        """The share of a validated frame's rows that are out of distribution."""
        flagged = self.out_of_distribution(self._frame_columns(frame))
        return float(flagged.mean()) if len(flagged) else 0.0

    # --- what is saved and shown -------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What metadata.json and GET /model show."""
        return {
            "file": GATE_FILE,
            "features": self.features,
            "ranges": self.spec["ranges"],
            "categories": self.spec["categories"],
            "pairs_checked": {
                f"{a} x {b}": {"rows": rows, "rare_below": rare} for a, b, rows, rare in self.spec["pairs"]
            },
            "detector": self.spec["detector"],
            "missing_values": "never a finding: pairs skip them, the forest sees the training median or mode",
        }

    def save(self, path: Path) -> None:
        """One .npz (no pickle): the spec as JSON text, the forest's arrays and the pairs' cells."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"spec": np.array(json.dumps(self.spec)), **self.forest.arrays(), **self.cells}
        np.savez(buffer, **arrays)
        with path.open("wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path, schema: FeatureSchema) -> OODGate:
        """The gate saved at `path`, for a model declaring `schema`; a GateError says what is wrong."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            spec = json.loads(str(arrays.pop("spec")))
        except (OSError, ValueError, KeyError) as exc:
            raise GateError(f"{path.name} cannot be read: {type(exc).__name__}: {exc}") from None
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            found = spec.get("format") if isinstance(spec, dict) else None
            raise GateError(f"{path.name} has format {found!r}; this code reads format {FORMAT}")
        if spec.get("features") != schema.kinds:
            raise GateError(f"{path.name} was fitted for features {spec.get('features')}; the model has {schema.kinds}")
        try:
            forest = Forest.from_arrays(arrays, spec["forest"])
            cells = {k: v for k, v in arrays.items() if k.startswith(("pair:", "count:"))}
            return cls(spec, forest, cells)
        except GateError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, StopIteration) as exc:
            raise GateError(f"{path.name} is malformed: {type(exc).__name__}: {exc}") from None


def _compile(spec: Mapping[str, Any]) -> tuple[_Feature, ...]:
    """The spec's features as `check` walks them."""
    compiled = []
    for column, (name, kind) in enumerate(spec["features"].items()):
        fill = float(spec["fill"][name])
        if kind == "category":
            codes = {str(c): i for i, c in enumerate(spec["categories"][name])}
            lookup: dict[Any, float] = {c: float(i) for c, i in codes.items()}
            lookup[None] = math.nan
            compiled.append(_Feature(name, column, kind, fill, codes=codes, lookup=lookup))
            continue
        bounds = spec["ranges"][name]
        if bounds is None:
            compiled.append(_Feature(name, column, kind, fill))
            continue
        low, high = float(bounds[0]), float(bounds[1])
        integer = kind == "integer"
        text = f"[{_number(low, integer)}, {_number(high, integer)}]"
        edges = tuple(float(e) for e in spec["edges"][name])
        compiled.append(_Feature(name, column, kind, fill, low, high, text, edges))
    return tuple(compiled)


def _bins(features: Sequence[_Feature], clean: pd.DataFrame) -> dict[str, np.ndarray[Any, np.dtype[np.int64]]]:
    """Per feature, each row's bin as `check` computes it; -1 where missing, unseen or out of range."""
    out = {}
    for f in features:
        if f.kind == "category":
            codes = pd.Series(clean[f.name].to_numpy(dtype=object)).map(f.codes).astype("float64")
            out[f.name] = codes.fillna(-1).to_numpy(dtype=np.int64)
        elif f.low is None or f.high is None:
            out[f.name] = np.full(len(clean), -1, dtype=np.int64)
        else:
            values = clean[f.name].to_numpy(dtype=np.float64)
            inside = (values >= f.low) & (values <= f.high)  # NaN: False
            found = np.searchsorted(np.asarray(f.edges, dtype=np.float64), values, side="left")
            out[f.name] = np.where(inside, found, -1).astype(np.int64)
    return out  # type: ignore[return-value]


def _matrix(features: Sequence[_Feature], clean: pd.DataFrame) -> Matrix:
    """The forest's input for a validated frame, vectorised (fitting, analysis); `check` builds
    the same values row by row: a missing value as the fill value, numbers clipped to the
    training range, categories as their codes and unseen ones as the fill value."""
    out = np.empty((len(clean), len(features)), dtype=np.float64)
    for f in features:
        if f.kind == "category":
            codes = pd.Series(clean[f.name].to_numpy(dtype=object)).map(f.codes).astype("float64")
            out[:, f.column] = codes.fillna(f.fill).to_numpy(dtype=np.float64)
        elif f.low is None or f.high is None:
            out[:, f.column] = f.fill
        else:
            values = clean[f.name].to_numpy(dtype=np.float64)
            out[:, f.column] = np.where(np.isnan(values), f.fill, np.clip(values, f.low, f.high))
    return out


def verdicts(gate: OODGate | None, rows: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    """The gate's verdicts, or NO_GATE for every row when the version was saved without one."""
    return gate.check(rows) if gate is not None else [NO_GATE] * len(rows)


# --- the compiled check ----------------------------------------------------------------------

# A value's status, per row and feature, as the compiled check reports it.
_FINE, _OUT_OF_RANGE, _NEVER_SEEN, _UNSEEN = 0, 1, 2, 3
# How the compiled check judges a feature.
_NUMBER, _NUMBER_NEVER_SEEN, _CATEGORY = 0, 1, 2


def _code(f: _Feature, value: Any) -> Any:
    """One value as the compiled check reads it (see `_codes`); numbers as they are."""
    if f.kind != "category":
        return value
    code = f.lookup.get(value, -1.0)
    return math.nan if code == -1.0 and _missing(value) else code


def _codes(f: _Feature, values: Any) -> list[float]:
    """A category column as the compiled check reads it: the code, NaN for missing, -1 for a
    value never seen in training. One C-level pass; a second look only at the rows not found."""
    codes = list(map(f.lookup.get, values, repeat(-1.0)))
    if -1.0 in codes:
        for i, code in enumerate(codes):
            if code == -1.0 and _missing(values[i]):  # NaN, as a frame holds a missing category
                codes[i] = math.nan
    return codes


@dataclass(frozen=True)
class _CheckArrays:
    """The gate's features and pairs as the compiled check reads them."""

    kind: np.ndarray[Any, np.dtype[np.int64]]
    low: Matrix
    high: Matrix
    fill: Matrix
    edges: Matrix  # per feature, its inner bin edges, padded with +inf
    n_edges: np.ndarray[Any, np.dtype[np.int64]]
    pairs: np.ndarray[Any, np.dtype[np.int64]]  # per pair: first, second, second's bins, offset, cells, rare_below
    cells: np.ndarray[Any, np.dtype[np.int64]]  # every pair's sorted cells, one after another
    counts: np.ndarray[Any, np.dtype[np.int64]]

    @classmethod
    def of(cls, features: Sequence[_Feature], pairs: Sequence[_Pair]) -> _CheckArrays:
        def kind(f: _Feature) -> int:
            return _CATEGORY if f.kind == "category" else _NUMBER_NEVER_SEEN if f.low is None else _NUMBER

        widest = max((len(f.edges) for f in features), default=0)
        edges = np.full((len(features), max(widest, 1)), np.inf)
        for f in features:
            edges[f.column, : len(f.edges)] = f.edges
        table, offset = [], 0
        for pair in pairs:
            table.append(
                [pair.first.column, pair.second.column, pair.second.bins, offset, len(pair.cells), pair.rare_below]
            )
            offset += len(pair.cells)
        by_column = sorted(features, key=lambda f: f.column)
        return cls(
            kind=np.array([kind(f) for f in by_column], dtype=np.int64),
            low=np.array([np.nan if f.low is None else f.low for f in by_column], dtype=np.float64),
            high=np.array([np.nan if f.high is None else f.high for f in by_column], dtype=np.float64),
            fill=np.array([f.fill for f in by_column], dtype=np.float64),
            edges=edges,
            n_edges=np.array([len(f.edges) for f in by_column], dtype=np.int64),
            pairs=np.array(table, dtype=np.int64).reshape(len(pairs), 6),
            cells=np.concatenate([p.cells for p in pairs]).astype(np.int64) if pairs else np.zeros(0, np.int64),
            counts=np.concatenate([p.counts for p in pairs]).astype(np.int64) if pairs else np.zeros(0, np.int64),
        )


def _path_length(
    x32: Any, i: int, split_feature: Any, split_threshold: Any, leaf_value: Any, depth: int, slot: Any
) -> float:
    """Row i's path lengths summed over the trees: every tree walked level by level, all trees
    advancing together (independent steps the CPU overlaps), the leaf values added in tree
    order as scikit-learn adds them. `slot` is scratch space, one per tree."""
    trees = split_feature.shape[0]
    for t in range(trees):
        slot[t] = 0
    for _ in range(depth):
        for t in range(trees):
            j = slot[t]
            slot[t] = 2 * j + 1 + (x32[i, split_feature[t, j]] > split_threshold[t, j])
    bottom = (1 << depth) - 1
    total = 0.0
    for t in range(trees):
        total += leaf_value[t, slot[t] - bottom]
    return total


def _walk_kernel(path_length: Callable[..., float]) -> Callable[..., None]:
    def walk(x32: Any, split_feature: Any, split_threshold: Any, leaf_value: Any, depth: int, denominator: float,
             out: Any) -> None:  # fmt: skip
        """Isolation scores of rows of float32 values."""
        slot = np.empty(split_feature.shape[0], dtype=np.int64)
        for i in range(x32.shape[0]):
            out[i] = 2.0 ** (
                -path_length(x32, i, split_feature, split_threshold, leaf_value, depth, slot) / denominator
            )

    return walk


def _check_kernel(path_length: Callable[..., float]) -> Callable[..., int]:
    def check(
        values: Any, kind: Any, low: Any, high: Any, fill: Any, edges: Any, n_edges: Any, pairs: Any, cells: Any,
        counts: Any, split_feature: Any, split_threshold: Any, leaf_value: Any, depth: int, denominator: float,
        threshold: float, flagged: Any, status: Any, bins: Any, rare: Any, scores: Any,
    ) -> int:  # fmt: skip
        """Every check of every row: each value against its range or known categories (status),
        its bin (-1 where missing, unseen or out of range), each pair's cell against the cells
        seen often enough (rare), the forest on the values as it reads them (a missing or
        unseen value as the fill value, numbers clipped to the training range), and whether
        anything was found (flagged). Returns how many rows are flagged."""
        n, width = values.shape
        how_many = 0
        x32 = np.empty((1, width), dtype=np.float32)
        slot = np.empty(split_feature.shape[0], dtype=np.int64)
        for i in range(n):
            found = False
            for j in range(width):
                v = values[i, j]
                state = _FINE
                cut = -1
                if kind[j] == _CATEGORY:
                    if v != v:  # missing
                        x = fill[j]
                    elif v < 0:
                        x = fill[j]
                        state = _UNSEEN
                    else:
                        x = v
                        cut = int(v)
                elif v != v:
                    x = fill[j]
                elif kind[j] == _NUMBER_NEVER_SEEN:
                    x = fill[j]
                    state = _NEVER_SEEN
                elif v < low[j]:
                    x = low[j]
                    state = _OUT_OF_RANGE
                elif v > high[j]:
                    x = high[j]
                    state = _OUT_OF_RANGE
                else:
                    x = v
                    cut = 0  # bisect_left: how many edges lie below the value
                    while cut < n_edges[j] and edges[j, cut] < v:
                        cut += 1
                status[i, j] = state
                bins[i, j] = cut
                x32[0, j] = x
                found = found or state != _FINE
            for p in range(pairs.shape[0]):
                a, b = bins[i, pairs[p, 0]], bins[i, pairs[p, 1]]
                is_rare = False
                if a >= 0 and b >= 0:
                    key = a * pairs[p, 2] + b
                    lo, end = pairs[p, 3], pairs[p, 3] + pairs[p, 4]
                    hi = end
                    while lo < hi:  # the first cell >= key
                        mid = (lo + hi) // 2
                        if cells[mid] < key:
                            lo = mid + 1
                        else:
                            hi = mid
                    count = counts[lo] if lo < end and cells[lo] == key else 0
                    is_rare = count < pairs[p, 5]
                rare[i, p] = is_rare
                found = found or is_rare
            if denominator == 0:  # one training row: scikit-learn scores everything 1
                score = 1.0
            else:
                score = 2.0 ** (
                    -path_length(x32, 0, split_feature, split_threshold, leaf_value, depth, slot) / denominator
                )
            scores[i] = score
            flagged[i] = found or score > threshold
            how_many += flagged[i]
        return how_many

    return check


_SIGNATURES = {
    "walk": "void(float32[:, ::1], int32[:, ::1], float32[:, ::1], float64[:, ::1], int64, float64, float64[::1])",
    "check": "int64(float64[:, ::1], int64[::1], float64[::1], float64[::1], float64[::1], float64[:, ::1], "
    "int64[::1], int64[:, ::1], int64[::1], int64[::1], int32[:, ::1], float32[:, ::1], float64[:, ::1], int64, "
    "float64, float64, uint8[::1], int8[:, ::1], int64[:, ::1], uint8[:, ::1], float64[::1])",
}
_PATH_LENGTH = "float64(float32[:, ::1], int64, int32[:, ::1], float32[:, ::1], float64[:, ::1], int64, int64[::1])"
_kernels: dict[str, Callable[..., Any]] = {}
_kernels_lock = threading.Lock()


def _compiled(name: str) -> Callable[..., Any]:
    """The kernel "walk", "check" or "check_nogil" (which releases the GIL), compiled for its one
    signature on first use in this process (a few seconds, which loading a version pays: its
    smoke check asks the gate)."""
    kernel = _kernels.get(name)
    if kernel is None:
        with _kernels_lock:
            if not _kernels:
                import numba  # only where a gate checks rows: importing it costs a third of a second

                path_length = numba.njit(_PATH_LENGTH)(_path_length)
                _kernels["walk"] = numba.njit(_SIGNATURES["walk"], nogil=True)(_walk_kernel(path_length))
                check = _check_kernel(path_length)
                _kernels["check"] = numba.njit(_SIGNATURES["check"])(check)
                _kernels["check_nogil"] = numba.njit(_SIGNATURES["check"], nogil=True)(check)
            kernel = _kernels[name]
    return kernel


# --- the reference sample ------------------------------------------------------------------


def reference_columns(schema: FeatureSchema, frame: pd.DataFrame) -> dict[str, str]:
    """Column -> kind of a reference frame: the features' kinds, then label, prediction, probability."""
    extra = {LABEL: "integer", PREDICTION: "integer", PROBABILITY: "number"}
    return {**schema.kinds, **{c: k for c, k in extra.items() if c in frame.columns}}


def write_reference(frame: pd.DataFrame, path: Path) -> None:
    """CSV, readable anywhere (`read_reference` restores the types); a missing value is an empty field."""
    text = frame.to_csv(index=False, lineterminator="\n")
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_reference(path: Path, columns: Mapping[str, str]) -> pd.DataFrame:
    """A reference frame with its types: categories as text (missing as NaN), numbers as
    float64, label and prediction as integers where none is missing."""
    kinds = dict(columns)
    frame = pd.read_csv(
        path,
        dtype={c: (object if k == "category" else "float64") for c, k in kinds.items()},
        keep_default_na=False,
        na_values={c: [""] for c in kinds},
    )
    for c in (LABEL, PREDICTION):
        if c in frame.columns and not frame[c].isna().any():
            frame[c] = frame[c].astype("int64")
    return frame
