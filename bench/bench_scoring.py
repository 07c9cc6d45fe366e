"""Scoring engines compared on the customer model: rows/s on one thread, and exactness.

The model is `CustomerModel` fitted on the generator's 150,000 clients (one month of activity,
seed 42; generated into a temporary directory, about a second). Each engine scores the same
rows, from validated feature columns (`Columns`: what the API and the batch scoring hold) to
P(label = 1), encoding attr_b included:

  * scikit-learn: a DataFrame, then `Pipeline.predict_proba` (what serves without a compiled scorer);
  * NumPy node walk: every tree's node arrays walked level by level in NumPy, all trees at once
    (needs nothing but NumPy);
  * numba tree walk: `data_science.compiled`'s walk (LLVM-compiled at load, no C compiler);
  * lookup table: `data_science.compiled`'s table (pure NumPy, nothing compiled).

For 1, 1,000 and 1,000,000 rows (resampled holdout rows, a twentieth of each feature missing,
a fiftieth of attr_b never seen). Each figure is the best of several repeats (the machine is
shared: other processes only ever make a run slower); exactness is `np.array_equal` against
scikit-learn on the 1,000,000 rows. Also: the numba walk's compile time in a fresh process,
the table's build time, an engine's load time. OMP_NUM_THREADS=1: one thread everywhere.

    .venv/bin/python bench/bench_scoring.py          # under a minute
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from data_engineering.generate import GeneratorConfig, generate
from data_science import compiled
from data_science.features import FEATURES, SCHEMA
from data_science.model import CustomerModel

SIZES = (1, 1_000, 1_000_000)


def training_frame(customers: int, directory: Path) -> pd.DataFrame:
    """feature_store-shaped rows from the generator (one month: the features need no more)."""
    generate(directory, GeneratorConfig(customers=customers, months=1, seed=42))
    profiles = pd.read_csv(directory / "customer_profiles.csv")
    activity = pd.read_csv(directory / "customer_activity.csv")
    current = activity[activity["valid_to"].isna()][["idx", "scd_a", "scd_b"]]
    frame = profiles.merge(current, on="idx").merge(pd.read_csv(directory / "labels.csv"), on="idx")
    return frame[["idx", *FEATURES, "label"]]


def scoring_rows(frame: pd.DataFrame, rows: int, seed: int) -> dict[str, np.ndarray]:
    """`rows` resampled rows as validated columns, with missing values and unseen categories."""
    rng = np.random.default_rng(seed)
    sample = SCHEMA.validate(frame.sample(rows, replace=True, random_state=seed).reset_index(drop=True))
    columns = {name: sample[name].to_numpy().copy() for name in FEATURES}
    for name in SCHEMA.numeric:
        columns[name][rng.random(rows) < 0.05] = np.nan
    attr_b = columns["attr_b"]
    attr_b[pd.isna(attr_b)] = None
    attr_b[rng.random(rows) < 0.05] = None
    attr_b[rng.random(rows) < 0.02] = "never-seen"
    return columns


def numpy_walk(walk: compiled.Walk, matrix: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """Every tree at once, one level per step, in NumPy; leaves added tree by tree (a pairwise
    `sum` over the trees would round differently from scikit-learn's running sum)."""
    n = matrix.shape[1]
    out = np.empty(n)
    missing_left = walk.missing_left.astype(bool)
    for start in range(0, n, chunk):
        x_all = matrix[:, start : start + chunk]
        m = x_all.shape[1]
        node = np.repeat(walk.roots[:, None], m, axis=1)
        rows = np.arange(m)[None, :]
        while True:
            feature = walk.feature[node]
            active = feature >= 0
            if not active.any():
                break
            x = x_all[np.where(active, feature, 0), rows]
            left = (x <= walk.threshold[node]) | (np.isnan(x) & missing_left[node])
            node = np.where(active, np.where(left, walk.left[node], walk.right[node]), node)
        raw = np.full(m, walk.baseline)
        for t in range(len(walk.roots)):
            raw += walk.value[node[t]]
        out[start : start + m] = expit(raw)
    return out


def best_seconds(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The fastest of `repeat` calls, and what the last one returned."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def cold_compile_seconds() -> tuple[float, float]:
    """Importing numba and compiling the walk in a fresh process (as a worker does once)."""
    code = (
        "import time; t = time.perf_counter(); import numba; i = time.perf_counter() - t; "
        "from data_science import compiled; t = time.perf_counter(); compiled.kernel(); "
        "print(i, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--max-iter", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        frame = training_frame(args.customers, Path(tmp) / "raw")
        started = time.perf_counter()
        model = CustomerModel(max_iter=args.max_iter).fit(frame)
        fit_seconds = time.perf_counter() - started
        pipeline = model.pipeline_
        started = time.perf_counter()
        table = compiled.Engine.build(pipeline)
        build_seconds = time.perf_counter() - started
        walk = compiled.Engine.build(pipeline, max_cells=0)
        assert isinstance(walk.method, compiled.Walk) and isinstance(table.method, compiled.Table)
        import_seconds, jit_seconds = cold_compile_seconds()
        walk.warm_up()
        load_seconds = {}
        for engine in (table, walk):
            path = Path(tmp) / f"{engine.name}.npz"
            engine.save(path)
            load_seconds[engine.name] = (
                best_seconds(lambda p=path: compiled.Engine.load(p), 5)[0],
                path.stat().st_size,
            )

    def sklearn(columns: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(pipeline.predict_proba(pd.DataFrame(columns, copy=False))[:, 1])

    def numpy(columns: dict[str, np.ndarray]) -> np.ndarray:
        return numpy_walk(walk.method, walk.encoder.matrix(columns))  # type: ignore[arg-type]

    engines: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
        "scikit-learn": sklearn,
        "NumPy node walk": numpy,
        "numba tree walk": walk.proba,
        "lookup table": table.proba,
    }
    repeats = {1: 300, 1_000: 30, 1_000_000: 2}
    results: dict[str, dict[int, float]] = {name: {} for name in engines}
    exact: dict[str, str] = {}
    for size in SIZES:
        columns = scoring_rows(frame, size, seed=size)
        expected = None
        for name, score in engines.items():
            rows, scale, repeat = columns, 1, repeats[size]
            if size == SIZES[-1] and name in ("scikit-learn", "NumPy node walk"):
                repeat = 1  # the slow ones: once (the NumPy walk on a fiftieth, scaled)
                if name == "NumPy node walk":
                    rows, scale = {k: v[: size // 50] for k, v in columns.items()}, 50
            seconds, got = best_seconds(lambda c=rows, s=score: s(c), repeat)
            results[name][size] = seconds * scale
            if size != SIZES[-1]:
                continue
            if name == "scikit-learn":
                expected = got
                continue
            assert expected is not None
            same = np.array_equal(got, expected[: len(got)])
            diff = float(np.max(np.abs(got - expected[: len(got)])))
            exact[name] = f"bit-identical ({len(got):,} rows)" if same else f"max |Δp| {diff:.2g} ({len(got):,} rows)"
    exact["scikit-learn"] = "(the reference)"

    print(
        f"customer model: {len(frame):,} clients, {walk.trees} trees, {len(walk.method.feature):,} nodes, "
        f"grid {' x '.join(map(str, table.method.shape))} = {table.method.table.size:,} cells; fit {fit_seconds:.1f} s"
    )
    print()
    print("| engine | 1 row: µs | 1,000 rows: rows/s | 1,000,000 rows: rows/s | against scikit-learn |")
    print("|---|---:|---:|---:|---|")
    for name in engines:
        r = results[name]
        rates = f"{1_000 / r[1_000]:,.0f} | {1_000_000 / r[1_000_000]:,.0f}"
        print(f"| {name} | {r[1] * 1e6:,.1f} | {rates} | {exact[name]} |")
    print()
    print(f"numba: import {import_seconds:.2f} s, compiling the walk {jit_seconds:.2f} s (fresh process, once)")
    print(f"lookup table: built in {build_seconds:.2f} s (scikit-learn scores one row per cell, at save time)")
    for name, (seconds, size) in load_seconds.items():
        print(f"{name}: {size / 1024:,.0f} KiB on disk, loaded in {seconds * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
