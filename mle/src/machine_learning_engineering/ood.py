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
Numba-compiled pass per request: ranges, categories, bins and pairs (each pair's cells a dense
grid: one read), then the forest, laid out as complete binary trees (a slot's feature and
float32 threshold in one int64, compared as ordered integer keys: the same decisions as
scikit-learn's float32-against-float64 comparison) and walked tree by tree for blocks of 256
rows (a tree's nodes stay in L1), the leaf values added in tree order as scikit-learn's
`score_samples` adds them (equal to it within 1e-12, 1e-16 in practice). A row's forest
verdict needs only which side of the threshold its mean path length falls: after every few
trees, the sum so far plus the least and the most the remaining trees can add bounds it, and a
row whose bound clears the threshold by a margin far above any rounding stops there (two
thirds of the trees, on ordinary rows); a row the forest flags still gets its full sum, in
order, for the score its finding states. The verdicts are the full sum's, bit for bit: the
tests compare them with the rules and the forest written out node by node in plain Python,
on rows at the threshold and odd values. About 0.5 µs a row in a batch; a request's one row
is written into arrays its thread keeps and the kernel takes six arguments (each costs a call
a type check). Reasons are written in Python for flagged rows only. The kernels compile on
first use in a process (a few seconds, when a version is loaded, off the request path; no
on-disk cache, which a read-only image could not keep anyway). Fitting needs scikit-learn
(installed wherever training runs); checking needs NumPy and Numba only.
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
    # arithmetic with no pointers to chase and no early exits. A leaf above the bottom level
    # passes every row to the left (threshold +inf) and its value fills the bottom slots below
    # it. Thresholds are float32 (the largest float32 not above scikit-learn's float64 one: for
    # a float32 value, `x > it` decides exactly as scikit-learn's float32-against-float64
    # comparison), and a slot holds its feature and its threshold in one int64 (feature << 32,
    # and the threshold as an ordered int32 key, `_key`): one load per step, and an integer
    # comparison that decides exactly as the float one.
    _nodes: np.ndarray[Any, np.dtype[np.int64]] = field(init=False, repr=False, compare=False)
    _leaf_value: Matrix = field(init=False, repr=False, compare=False)
    # Per tree t, the least and the most trees t.. can still add to a path length (the sums of
    # their smallest and largest leaf values): the bounds that let a verdict stop early.
    _remaining: Matrix = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        trees, depth = len(self.roots), self.depth
        if trees * 16 * 2**depth > MAX_FOREST_BYTES:
            raise GateError(f"its forest of {trees} trees of depth {depth} is too large to score")
        threshold32 = self.threshold.astype(np.float32)
        above = threshold32.astype(np.float64) > self.threshold
        threshold32[above] = np.nextafter(threshold32[above], np.float32(-np.inf))
        split_feature = np.zeros((trees, 2**depth - 1), dtype=np.int64)
        split_threshold = np.full((trees, 2**depth - 1), np.inf, dtype=np.float32)
        node = self.roots.astype(np.intp)[:, None]  # the nodes of one level, per tree, left to right
        for level in range(depth):
            slots = slice(2**level - 1, 2 ** (level + 1) - 1)
            left, right = self.children[node, 0], self.children[node, 1]
            leaf = left == node
            split_feature[:, slots] = np.where(leaf, 0, self.feature[node])
            split_threshold[:, slots] = np.where(leaf, np.float32(np.inf), threshold32[node])
            node = np.stack([left, np.where(leaf, node, right)], axis=-1).reshape(trees, -1)
        keys = _keys(split_threshold, nan=np.iinfo(np.int32).max)  # x > NaN never holds
        nodes = np.ascontiguousarray((split_feature << 32) | (keys.astype(np.int64) & 0xFFFFFFFF))
        leaf_value = np.ascontiguousarray(self.value[node], dtype=np.float64)
        remaining = np.zeros((2, trees + 1), dtype=np.float64)
        remaining[0, :trees] = np.cumsum(leaf_value.min(axis=1)[::-1])[::-1]
        remaining[1, :trees] = np.cumsum(leaf_value.max(axis=1)[::-1])[::-1]
        object.__setattr__(self, "_nodes", nodes)
        object.__setattr__(self, "_leaf_value", leaf_value)
        object.__setattr__(self, "_remaining", remaining)

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
        _compiled("walk")(x32, self._nodes, self._leaf_value, self.depth, self.denominator, out)

    def limit(self, threshold: float) -> tuple[float, float]:
        """The path length (summed over the trees) at which a row's score equals `threshold`,
        and the margin within which a verdict is left to the full sum: a row whose sum is
        certainly above limit + margin scores below the threshold, certainly below limit -
        margin above it. The margin dwarfs any rounding (the sum's and pow's, ~1e-13 here)
        and is a millionth of a path length; NaN (no early verdicts) for a threshold outside (0, inf)."""
        if not (0 < threshold < math.inf) or self.denominator <= 0:
            return math.nan, math.nan
        limit = -self.denominator * math.log2(threshold)
        scale = 1.0 + abs(limit) + float(np.abs(self._remaining).max())
        return limit, 1e-6 * scale

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
        self._limit, self._margin = forest.limit(self.threshold)
        self._first = self._features[0].name
        # One row's values as `_run` reads them: (column, name, category lookup or None).
        self._row_readers = tuple(
            (f.column, f.name, f.lookup.get if f.kind == "category" else None) for f in self._features
        )
        self._thread = threading.local()
        self._ints, self._floats = _pack(self._arrays, forest, self.threshold, self._limit, self._margin)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_thread"]  # a thread's one-row arrays belong to this process, not a copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread = threading.local()

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
        run = self._run(columns, True)
        if run is None:
            return []
        how_many, out, scores = run
        verdicts = [IN_DISTRIBUTION] * len(out)
        if not how_many:
            return verdicts
        flagged, status, bins, rare = self._parts(out)
        for i in np.flatnonzero(flagged).tolist():
            verdicts[i] = Verdict(False, self._findings(i, columns, status, bins, rare, float(scores[i])))
        return verdicts

    def out_of_distribution(self, columns: Mapping[str, Any]) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """True per row of validated columns that `check_columns` would flag; no reasons written
        (the forest is skipped for rows another check flags, and stops once its verdict is certain)."""
        run = self._run(columns, False)
        if run is None:
            return np.zeros(0, dtype=bool)
        flagged: np.ndarray[Any, np.dtype[np.bool_]] = run[1][:, 0].astype(np.bool_)
        return flagged

    def _run(self, columns: Mapping[str, Any], reasons: bool) -> tuple[Any, ...] | None:
        """(how many rows are flagged, out, scores) or None for no rows (`_parts` reads out).
        One row (a /predict) is written into arrays this thread keeps (valid until its next
        call): allocating them would cost more than checking the row."""
        n = len(columns[self._first])
        if n == 0:
            return None
        if n == 1:
            arrays = getattr(self._thread, "arrays", None)
            if arrays is None:
                arrays = self._thread.arrays = self._outputs(1)
            values = arrays[0]
            for column, name, lookup in self._row_readers:  # as `_codes` and a float64 column read them
                value = columns[name][0]
                if lookup is None:
                    values[0, column] = math.nan if value is None else value
                else:
                    code = lookup(value, -1.0)
                    values[0, column] = _not_found(value) if code == -1.0 else code
        else:
            arrays = self._outputs(n)
            values = arrays[0]
            for f in self._features:
                if f.kind == "category":
                    values[:, f.column] = _codes(f, columns[f.name])
                else:
                    values[:, f.column] = columns[f.name]
        _, out, scores = arrays
        kernel = _compiled("check" if n < NOGIL_ROWS else "check_nogil")
        how_many = kernel(values, self._ints, self._floats, reasons, out, scores)
        return how_many, out, scores

    def _parts(self, out: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
        """flagged, status, bins and rare: the columns of a check's `out`."""
        width = len(self._features)
        return out[:, 0], out[:, 1 : 1 + width], out[:, 1 + width : 1 + 2 * width], out[:, 1 + 2 * width :]

    def _outputs(self, n: int) -> tuple[np.ndarray[Any, Any], ...]:
        """values (left for the caller to fill), out (flagged, status, bins, rare: `_check_kernel`)
        and scores for n rows."""
        width = len(self._features)
        return (
            np.empty((n, width), dtype=np.float64),
            np.empty((n, 1 + 2 * width + len(self._pairs)), dtype=np.int32),
            np.empty(n, dtype=np.float64),
        )

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
_INT32_MIN = -(2**31)
# Rows judged together, then walked through the forest together (their keys stay in L1).
_BLOCK = 256
# Trees walked between two looks at whether a row's forest verdict is already certain.
_TREE_STEP = 8
# ... and for fewer than _FEW_ROWS rows, which walk these many trees side by side.
_FEW_TREE_STEP = 25
# Fewer rows than this walk their trees side by side (one row alone would wait on each step).
_FEW_ROWS = 4
# The packed int64 array's header (`_pack`).
_HEADER = 8


def _codes(f: _Feature, values: Any) -> list[float]:
    """A category column as the compiled check reads it: the code, NaN for missing, -1 for a
    value never seen in training. One C-level pass; a second look only at the rows not found."""
    codes = list(map(f.lookup.get, values, repeat(-1.0)))
    if -1.0 in codes:
        for i, code in enumerate(codes):
            if code == -1.0:
                codes[i] = _not_found(values[i])
    return codes


def _not_found(value: Any) -> float:
    """The code of a category value its lookup does not hold: NaN when it is missing (None, or
    NaN as a frame holds a missing category), -1 when it was never seen in training."""
    return math.nan if _missing(value) else -1.0


@dataclass(frozen=True)
class _CheckArrays:
    """The gate's features and pairs as the compiled check reads them."""

    kind: np.ndarray[Any, np.dtype[np.int64]]
    low: Matrix
    high: Matrix
    fill: Matrix
    edges: Matrix  # per feature, its inner bin edges, padded with +inf
    n_edges: np.ndarray[Any, np.dtype[np.int64]]
    pairs: np.ndarray[Any, np.dtype[np.int64]]  # per pair: first, second, second's bins, offset in rare_cells
    # Every pair's grid of cells (first's bin * second's bins + second's bin), one after
    # another: 1 where fewer than rare_below training rows were seen (a direct read per pair).
    rare_cells: np.ndarray[Any, np.dtype[np.uint8]]

    @classmethod
    def of(cls, features: Sequence[_Feature], pairs: Sequence[_Pair]) -> _CheckArrays:
        def kind(f: _Feature) -> int:
            return _CATEGORY if f.kind == "category" else _NUMBER_NEVER_SEEN if f.low is None else _NUMBER

        widest = max((len(f.edges) for f in features), default=0)
        edges = np.full((len(features), max(widest, 1)), np.inf)
        for f in features:
            edges[f.column, : len(f.edges)] = f.edges
        table, grids, offset = [], [], 0
        for pair in pairs:
            size = pair.first.bins * pair.second.bins
            grid = np.ones(size, dtype=np.uint8)  # a cell no training row had: rare
            inside = (pair.cells >= 0) & (pair.cells < size)
            grid[pair.cells[inside]] = pair.counts[inside] < pair.rare_below
            table.append([pair.first.column, pair.second.column, pair.second.bins, offset])
            grids.append(grid)
            offset += size
        by_column = sorted(features, key=lambda f: f.column)
        return cls(
            kind=np.array([kind(f) for f in by_column], dtype=np.int64),
            low=np.array([np.nan if f.low is None else f.low for f in by_column], dtype=np.float64),
            high=np.array([np.nan if f.high is None else f.high for f in by_column], dtype=np.float64),
            fill=np.array([f.fill for f in by_column], dtype=np.float64),
            edges=edges,
            n_edges=np.array([len(f.edges) for f in by_column], dtype=np.int64),
            pairs=np.array(table, dtype=np.int64).reshape(len(pairs), 4),
            rare_cells=np.concatenate(grids) if grids else np.zeros(0, np.uint8),
        )


def _keys(values: Any, nan: int) -> np.ndarray[Any, np.dtype[np.int32]]:
    """Ordered int32 keys of float32 values, as `_to_keys` makes them in the kernels: a > b
    exactly when key(a) > key(b) (-0 is 0; a NaN gets the key `nan`)."""
    x = np.where(values == 0, np.float32(0), values).astype(np.float32)
    bits = x.view(np.int32)
    keys = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    return np.where(np.isnan(x), np.int32(nan), keys).astype(np.int32)


def _to_keys(x: Any, count: int) -> None:
    """The first `count` float32 values of `x` replaced in place by their ordered int32 keys
    (`_keys`; a NaN, which no threshold is below, gets the least key)."""
    bits = x.view(np.int32)
    for k in range(count):
        v = x[k]
        if v != v:
            bits[k] = _INT32_MIN
        elif v == 0:
            bits[k] = 0
        elif bits[k] < 0:
            bits[k] ^= 0x7FFFFFFF


def _add_trees(keys: Any, width: int, m: int, totals: Any, nodes: Any, leaf_value: Any, depth: int, start: int,
               stop: int, slots: Any) -> None:  # fmt: skip
    """Trees start..stop-1 walked for the first m rows of `keys` (row k's key of feature f at
    k * width + f), each leaf value added to the row's total in tree order. Tree by tree (its
    nodes stay in L1 while every row goes through it), a level of every row at a time
    (independent steps the CPU overlaps); `slots` is scratch space, one per row. Indices are
    unsigned: no negative-index arithmetic in the loop."""
    one, two = np.uint64(1), np.uint64(2)
    w, rows = np.uint64(width), np.uint64(m)
    bottom = np.uint64((1 << depth) - 1)
    if m < _FEW_ROWS:  # a request's row: its trees side by side instead (a row alone walks one tree at a time)
        for k in range(rows):
            x = k * w
            for t in range(start, stop):
                slots[t - start] = np.uint64(0)
            for _ in range(depth):
                for t in range(start, stop):
                    v = nodes[t, slots[t - start]]
                    slots[t - start] = (
                        two * slots[t - start] + one + np.uint64(keys[x + np.uint64(v >> 32)] > np.int32(v))
                    )
            for t in range(start, stop):
                totals[k] += leaf_value[t, slots[t - start] - bottom]
        return
    for t in range(start, stop):
        node = nodes[t]
        leaf = leaf_value[t]
        for k in range(rows):
            slots[k] = np.uint64(0)
        for _ in range(depth):
            for k in range(rows):
                v = node[slots[k]]
                slots[k] = two * slots[k] + one + np.uint64(keys[k * w + np.uint64(v >> 32)] > np.int32(v))
        for k in range(rows):
            totals[k] += leaf[slots[k] - bottom]


def _walk_kernel(to_keys: Callable[..., None], add_trees: Callable[..., None]) -> Callable[..., None]:
    def walk(x32: Any, nodes: Any, leaf_value: Any, depth: int, denominator: float, out: Any) -> None:
        """Isolation scores of rows of float32 values, every tree summed in tree order."""
        n, width = x32.shape
        keys = np.empty(_BLOCK * width, dtype=np.float32)
        totals = np.empty(_BLOCK, dtype=np.float64)
        slots = np.empty(max(_BLOCK, nodes.shape[0]), dtype=np.uint64)
        for start in range(0, n, _BLOCK):
            m = min(n, start + _BLOCK) - start
            for k in range(m):
                totals[k] = 0.0
                for f in range(width):
                    keys[k * width + f] = x32[start + k, f]
            to_keys(keys, m * width)
            add_trees(keys.view(np.int32), width, m, totals, nodes, leaf_value, depth, 0, nodes.shape[0], slots)
            for k in range(m):
                out[start + k] = 2.0 ** (-totals[k] / denominator)

    return walk


def _judge_row(
    values: Any, i: int, kind: Any, low: Any, high: Any, fill: Any, edges: Any, n_edges: Any, pairs: Any,
    rare_cells: Any, status: Any, bins: Any, rare: Any, x: Any, at: int,
) -> bool:  # fmt: skip
    """Row i's values against their ranges or known categories (status), its bins (-1 where
    missing, unseen or out of range), each pair's cell against the cells seen often enough
    (rare), and the forest's input written at x[at:] (a missing or unseen value as the fill
    value, numbers clipped to the training range). True when anything was found."""
    width = values.shape[1]
    found = False
    for j in range(width):
        v = values[i, j]
        state = _FINE
        cut = -1
        if kind[j] == _CATEGORY:
            if v != v:  # missing
                xj = fill[j]
            elif v < 0:
                xj = fill[j]
                state = _UNSEEN
            else:
                xj = v
                cut = int(v)
        elif v != v:
            xj = fill[j]
        elif kind[j] == _NUMBER_NEVER_SEEN:
            xj = fill[j]
            state = _NEVER_SEEN
        elif v < low[j]:
            xj = low[j]
            state = _OUT_OF_RANGE
        elif v > high[j]:
            xj = high[j]
            state = _OUT_OF_RANGE
        else:
            xj = v
            cut = 0  # bisect_left: how many edges lie below the value (sorted: no branch needed)
            for e in range(n_edges[j]):
                cut += edges[j, e] < v
        status[i, j] = state
        bins[i, j] = cut
        x[at + j] = xj
        found = found or state != _FINE
    for p in range(pairs.shape[0]):
        a, b = bins[i, pairs[p, 0]], bins[i, pairs[p, 1]]
        is_rare = a >= 0 and b >= 0 and rare_cells[pairs[p, 3] + a * pairs[p, 2] + b] != 0
        rare[i, p] = is_rare
        found = found or is_rare
    return found


def _check_rows_kernel(
    judge_row: Callable[..., bool], to_keys: Callable[..., None], add_trees: Callable[..., None]
) -> Callable[..., int]:
    def check_rows(
        values: Any, kind: Any, low: Any, high: Any, fill: Any, edges: Any, n_edges: Any, pairs: Any,
        rare_cells: Any, nodes: Any, leaf_value: Any, remaining: Any, depth: int, denominator: float, threshold: float,
        limit: float, margin: float, reasons: bool, flagged: Any, status: Any, bins: Any, rare: Any, scores: Any,
    ) -> int:  # fmt: skip
        """Every check of every row (`_judge_row`), then the forest for the rows it can still
        flag, and whether anything was found (flagged). Returns how many rows are flagged.

        The forest's verdict is exact without always summing every tree: after each
        `_TREE_STEP` trees (`_FEW_TREE_STEP` for a few rows) a row's sum so far plus the least
        (most) the remaining trees can add is a bound; a row certainly above limit + margin is
        not flagged by the forest, one certainly below limit - margin is. A row the forest
        flags gets its score (the full sum, in tree order) when `reasons` (a finding states
        it); without `reasons` a row already flagged by another check skips the forest.
        `scores` holds the score of every row whose sum was completed, NaN for the others."""
        n, width = values.shape
        trees = nodes.shape[0]
        block = max(1, min(n, _BLOCK))
        x = np.empty(block * width, dtype=np.float32)
        keys = x.view(np.int32)
        totals = np.empty(block, dtype=np.float64)
        rows = np.empty(block, dtype=np.int64)
        slots = np.empty(max(block, _FEW_TREE_STEP), dtype=np.uint64)
        how_many = 0
        for start in range(0, n, block):
            end = min(n, start + block)
            m = 0
            for i in range(start, end):
                found = judge_row(values, i, kind, low, high, fill, edges, n_edges, pairs, rare_cells, status, bins,
                                  rare, x, m * width)  # fmt: skip
                flagged[i] = found
                scores[i] = math.nan
                if denominator == 0:  # one training row: scikit-learn scores everything 1
                    scores[i] = 1.0
                    flagged[i] = found or threshold < 1.0
                elif reasons or not found:
                    rows[m] = i
                    totals[m] = 0.0
                    m += 1
            to_keys(x, m * width)
            t = 0
            step = _TREE_STEP if m >= _FEW_ROWS else _FEW_TREE_STEP
            while t < trees and m > 0:
                stop = min(trees, t + step)
                add_trees(keys, width, m, totals, nodes, leaf_value, depth, t, stop, slots)
                t = stop
                if t == trees:
                    break
                least, most = remaining[0, t], remaining[1, t]
                kept = 0
                for k in range(m):
                    if totals[k] + least > limit + margin:  # scores below the threshold
                        continue
                    if not reasons and totals[k] + most < limit - margin:  # scores above it
                        flagged[rows[k]] = True
                        continue
                    if kept != k:
                        rows[kept] = rows[k]
                        totals[kept] = totals[k]
                        for f in range(width):
                            keys[kept * width + f] = keys[k * width + f]
                    kept += 1
                m = kept
            for k in range(m):  # every tree summed
                score = 2.0 ** (-totals[k] / denominator)
                scores[rows[k]] = score
                if score > threshold:
                    flagged[rows[k]] = True
            for i in range(start, end):
                how_many += flagged[i]
        return how_many

    return check_rows


def _check_kernel(check_rows: Callable[..., int]) -> Callable[..., int]:
    def check(values: Any, ints: Any, floats: Any, reasons: bool, out: Any, scores: Any) -> int:
        """`check_rows` on the gate's arrays packed into `ints` and `floats` (`_pack`), its
        flagged, status, bins and rare written into the columns of `out`: six arguments, not
        twenty-three (each costs a request's call a look at its type)."""
        width, n_pairs, edge_width, trees, slots, leaves, depth, n_cells = ints[:_HEADER]
        at = _HEADER
        kind = ints[at : at + width]
        n_edges = ints[at + width : at + 2 * width]
        at += 2 * width
        pairs = ints[at : at + 4 * n_pairs].reshape((n_pairs, 4))
        at += 4 * n_pairs
        rare_cells = ints[at : at + n_cells]
        at += n_cells
        nodes = ints[at : at + trees * slots].reshape((trees, slots))
        denominator, threshold, limit, margin = floats[0], floats[1], floats[2], floats[3]
        at = 4
        low, high, fill = (
            floats[at : at + width],
            floats[at + width : at + 2 * width],
            floats[at + 2 * width : at + 3 * width],
        )
        at += 3 * width
        edges = floats[at : at + width * edge_width].reshape((width, edge_width))
        at += width * edge_width
        remaining = floats[at : at + 2 * (trees + 1)].reshape((2, trees + 1))
        at += 2 * (trees + 1)
        leaf_value = floats[at : at + trees * leaves].reshape((trees, leaves))
        return check_rows(
            values, kind, low, high, fill, edges, n_edges, pairs, rare_cells, nodes, leaf_value, remaining, depth,
            denominator, threshold, limit, margin, reasons, out[:, 0], out[:, 1 : 1 + width],
            out[:, 1 + width : 1 + 2 * width], out[:, 1 + 2 * width :], scores,
        )  # fmt: skip

    return check


def _pack(arrays: _CheckArrays, forest: Forest, threshold: float, limit: float, margin: float) -> tuple[Any, Any]:
    """The arrays `check` reads, as one int64 and one float64 array (`_check_kernel` unpacks them)."""
    width, edge_width = arrays.edges.shape
    trees, slots = forest._nodes.shape
    header = [width, len(arrays.pairs), edge_width, trees, slots, forest._leaf_value.shape[1], forest.depth,
              len(arrays.rare_cells)]  # fmt: skip
    ints = np.concatenate(
        [np.array(header), arrays.kind, arrays.n_edges, arrays.pairs.ravel(), arrays.rare_cells, forest._nodes.ravel()]
    ).astype(np.int64)
    floats = np.concatenate(
        [np.array([forest.denominator, threshold, limit, margin]), arrays.low, arrays.high, arrays.fill,
         arrays.edges.ravel(), forest._remaining.ravel(), forest._leaf_value.ravel()]
    ).astype(np.float64)  # fmt: skip
    return np.ascontiguousarray(ints), np.ascontiguousarray(floats)


_SIGNATURES = {
    "walk": "void(float32[:, ::1], int64[:, ::1], float64[:, ::1], int64, float64, float64[::1])",
    "check": "int64(float64[:, ::1], int64[::1], float64[::1], boolean, int32[:, ::1], float64[::1])",
}
_HELPERS = {
    "to_keys": "void(float32[::1], int64)",
    "add_trees": "void(int32[::1], int64, int64, float64[::1], int64[:, ::1], float64[:, ::1], int64, int64, int64, "
    "uint64[::1])",
}
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

                to_keys = numba.njit(_HELPERS["to_keys"])(_to_keys)
                add_trees = numba.njit(_HELPERS["add_trees"])(_add_trees)
                judge_row = numba.njit(inline="always")(_judge_row)
                _kernels["walk"] = numba.njit(_SIGNATURES["walk"], nogil=True)(_walk_kernel(to_keys, add_trees))
                check = _check_kernel(numba.njit(_check_rows_kernel(judge_row, to_keys, add_trees)))
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
