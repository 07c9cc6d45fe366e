"""How often the drift report alarms: on samples of the training distribution (false alarms) and
on shifted samples (detections), at the default thresholds and a few others.

The generator (data_engineering.generate) draws a training dataset (seed 42) and independent
"current" datasets (other seeds, the same distribution). The reference is a 10,000-row sample
of the training rows, as training keeps (REFERENCE_ROWS); the out-of-distribution gate is fitted
on the training rows as training fits it; probabilities and predicted labels are the
generator's true probabilities (the reference's and the current's alike). Each current sample
goes through `monitoring.report.build_report` and `monitoring.alerts.find_breaches`, the code the
job runs. Printed as Markdown tables (docs/drift.md keeps the figures).

    .venv/bin/python bench/bench_drift.py [--seeds 20] [--data-dir bench/data/drift]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_engineering.generate import GeneratorConfig, generate, true_probability
from data_science.features import SCHEMA
from machine_learning_engineering import ood
from monitoring.alerts import find_breaches
from monitoring.config import Thresholds
from monitoring.job import judge
from monitoring.report import build_report

SIZES = (200, 500, 1_000, 5_000, 20_000)
THRESHOLD = 0.15  # the predicted label: probability above this (about the model's own threshold)


def features(raw: Path, config: GeneratorConfig) -> pd.DataFrame:
    """feature_store's rows of a generated dataset, with the true probability and its label."""
    if not (raw / "labels.csv").exists():
        generate(raw, config)
    profiles = pd.read_csv(raw / "customer_profiles.csv")
    activity = pd.read_csv(raw / "customer_activity.csv")
    latest = activity[activity["valid_to"].isna()][["idx", "scd_a", "scd_b"]]
    frame = profiles.merge(latest, on="idx").merge(pd.read_csv(raw / "labels.csv"), on="idx")
    frame = frame[["attr_a", "attr_b", "scd_a", "scd_b", "label"]].copy()
    frame["attr_a"] = frame["attr_a"].astype("float64")
    frame["scd_b"] = frame["scd_b"].astype("float64")
    frame["attr_b"] = pd.Series([v if isinstance(v, str) else np.nan for v in frame["attr_b"]], dtype=object)
    return with_scores(frame)


def with_scores(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    p = true_probability(
        frame["attr_a"].to_numpy(), frame["attr_b"].to_numpy(), frame["scd_a"].to_numpy(), frame["scd_b"].to_numpy()
    )
    frame["probability"] = p
    frame["prediction"] = (p > THRESHOLD).astype("float64")
    return frame


def shift_scd_a(delta: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def shift(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        frame = frame.copy()
        frame["scd_a"] = (frame["scd_a"] + delta).clip(upper=1.0)
        return with_scores(frame)

    return shift


def shift_attr_b(share: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def shift(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[rng.random(len(frame)) < share, "attr_b"] = "d"
        return with_scores(frame)

    return shift


def both(delta: float, share: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def shift(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        return shift_attr_b(share)(shift_scd_a(delta)(frame, rng), rng)

    return shift


def blank(column: str, share: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def shift(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        frame = frame.copy()
        frame[column] = frame[column].where(rng.random(len(frame)) >= share)
        return with_scores(frame)

    return shift


def unseen(share: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def shift(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[rng.random(len(frame)) < share, "attr_a"] = 9.0  # never seen in training (1-5)
        return with_scores(frame)

    return shift


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data/drift"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    defaults = Thresholds()
    # Every size judged, to show what MONITOR_MIN_ROWS keeps out; `judged` says which are by default.
    everything = defaults.model_copy(update={"min_rows": 1})
    print(f"# drift report: false alarms and detections ({args.seeds} seeds per row)\n")
    print(f"Default thresholds: {defaults!r}\n")

    for missing in (0.0, 0.1):
        name = "complete" if not missing else f"missing{missing:g}"
        training = features(
            args.data_dir / f"{name}-train", GeneratorConfig(customers=50_000, months=1, seed=42, missing_rate=missing)
        )
        gate = ood.OODGate.fit(SCHEMA, training, seed=42)
        reference = training.sample(n=ood.REFERENCE_ROWS, random_state=42).sort_index()
        reference["out_of_distribution"] = judge(gate, reference, SCHEMA, "reference")
        pools = [
            features(
                args.data_dir / f"{name}-current-{s}",
                GeneratorConfig(customers=max(SIZES), months=1, seed=1000 + s, missing_rate=missing),
            )
            for s in range(args.seeds)
        ]
        for pool in pools:
            pool["out_of_distribution"] = judge(gate, pool, SCHEMA, "current")

        def run(
            size: int,
            seed: int,
            change: Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame] | None,
            reference: pd.DataFrame = reference,
            pools: list[pd.DataFrame] = pools,
            gate: ood.OODGate = gate,
        ) -> dict[str, Any]:
            rng = np.random.default_rng(seed)
            sample = pools[seed].sample(n=size, random_state=seed).reset_index(drop=True)
            if change is not None:
                sample = change(sample, rng)
                sample["out_of_distribution"] = judge(gate, sample, SCHEMA, "current")
            report = build_report(reference, sample, SCHEMA, everything, source="batch", timestamp=datetime(2026, 1, 1))
            increases = [
                (report.value("missing_rate", f) or 0.0) - (report.value("missing_rate_reference", f) or 0.0)
                for f in SCHEMA.names
            ]
            return {
                "share": report.value("drift_share") or 0.0,
                "scores": {f: report.value("drift_score", f) or 0.0 for f in SCHEMA.names},
                "drifted": report.drifted,
                "ood": report.value("ood_rate") or 0.0,
                "missing": max(increases),
                "prediction": report.value("prediction_drift_score") or 0.0,
                "breaches": {b.threshold for b in find_breaches({"batch": report}, everything)},
            }

        print(f"## Dataset: {'no missing values' if not missing else f'{missing:.0%} of attr_a and attr_b missing'}\n")
        print(
            f"Reference: {len(reference):,} of 50,000 training rows (seed 42); the gate flags"
            f" {reference['out_of_distribution'].mean():.2%} of them.\n"
        )
        print("### Same distribution (independent generator seeds)\n")
        print(
            "| rows | judged by default | max score per feature | drifted (seeds) | max drift share | max OOD rate"
            " | max missing increase | max prediction score | seeds alarming |"
        )
        print("|---:|---|---|---|---:|---:|---:|---:|---:|")
        for size in SIZES:
            results = [run(size, s, None) for s in range(args.seeds)]
            scores = ", ".join(f"{f} {max(r['scores'][f] for r in results):.3f}" for f in SCHEMA.names)
            counted = pd.Series([f for r in results for f in r["drifted"]], dtype=object).value_counts()
            drifted = ", ".join(f"{f} ({n})" for f, n in counted.items()) or "none"
            alarming = sorted(set().union(*(r["breaches"] for r in results)))
            print(
                f"| {size:,} | {'yes' if size >= defaults.min_rows else 'no'} | {scores} | {drifted}"
                f" | {max(r['share'] for r in results):.2f} | {max(r['ood'] for r in results):.3f}"
                f" | {max(r['missing'] for r in results):.3f} | {max(r['prediction'] for r in results):.3f}"
                f" | {sum(bool(r['breaches']) for r in results)} ({', '.join(alarming) or '-'}) |"
            )
        if missing:
            continue
        changes = {
            "scd_a + 0.05": shift_scd_a(0.05),
            "scd_a + 0.20": shift_scd_a(0.20),
            "attr_b: 20 % set to d": shift_attr_b(0.2),
            "scd_a + 0.2 and attr_b 40 % to d": both(0.2, 0.4),
            "scd_b 10 % missing": blank("scd_b", 0.10),
            "attr_a = 9 (unseen) in 10 %": unseen(0.10),
        }
        print("\n### Shifted samples: seeds alarming per threshold, features found drifted\n")
        print("| change | rows | drift_share | ood_rate | missing_rate | drifted features (seeds) |")
        print("|---|---:|---:|---:|---:|---|")
        for label, change in changes.items():
            for size in (500, 5_000):
                results = [run(size, s, change) for s in range(args.seeds)]
                counted = pd.Series([f for r in results for f in r["drifted"]], dtype=object).value_counts()
                named = ", ".join(f"{f} ({n})" for f, n in counted.items()) or "none"
                print(
                    f"| {label} | {size:,} | {sum('drift_share' in r['breaches'] for r in results)}"
                    f" | {sum('ood_rate' in r['breaches'] for r in results)}"
                    f" | {sum('missing_rate' in r['breaches'] for r in results)} | {named} |"
                )
        print()
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
