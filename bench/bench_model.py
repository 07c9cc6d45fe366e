"""Model benchmark on 1,500,000 clients: training time, holdout ROC AUC against the best
achievable (the generator's true probabilities on the same holdout rows), prediction latency,
the model-family comparison behind the choice of estimator, and scoring throughput.

Scoring, in one run on one cluster (`--parts scoring`):
  * in process, one thread: `MLEModel.score_columns` on 1,000,000 validated rows of
    feature_store (the path the API and batch scoring take: the compiled scorer when the version
    has one), against scikit-learn's `predict_proba` on the same rows (a one-row-per-client
    frame, its thread pool limited to one thread), with the largest |Δp| between them and the
    label flips; the out-of-distribution gate's columnar check on the same rows for context;
  * reading feature_store whole with COPY into NumPy columns: binary (decoded) against CSV
    (pandas' C parser);
  * end to end: every client of feature_store scored from the database into a new day of
    `batch_predictions` by `orchestration.assets.scoring.score_partition` (COPY out as ds_user,
    decode, validate, gate, score, COPY in as mle_user, commit), against the previous asset's
    path in the same run (rows through the cursor into a DataFrame, `predict_labels_and_probabilities`,
    `execute_values`; it recorded no gate verdict). The sides alternate. Also: the same run with
    every stage in turn (the stage breakdown), a re-run of a day that holds scores (its delete,
    and COPY next to the dead rows), the same version without its gate (what the gate costs end
    to end), and runs in a new process each, as Dagster starts a run's step (imports, loading
    the champion, Numba compiling).
Each figure three times (`--rounds`): median and spread (min-max). The model is the version this
benchmark trains, saved and loaded as the asset loads a champion.

Goals: holdout ROC AUC within 0.01 of the best achievable; in-process scoring >= 1,000,000
rows/s on one thread; end to end >= 300,000 rows/s.

    .venv/bin/python bench/bench_model.py                   # everything (about 6 minutes)
    .venv/bin/python bench/bench_model.py --parts scoring   # training and scoring only
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_etl import dataset, truth_file
from psycopg2.extras import execute_values
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import load_customers
from data_science.config import TrainSettings
from data_science.selection import compare_models
from data_science.train import read_training_data, train
from machine_learning_engineering import db, registry
from machine_learning_engineering.config import DatabaseSettings
from machine_learning_engineering.model import MLEModel, model_class
from orchestration.assets.scoring import Outcome, score_partition
from testkit import localdb

GOAL = 0.01
IN_PROCESS_GOAL = 1_000_000
END_TO_END_GOAL = 300_000
PARTS = ("accuracy", "comparison", "scoring")
STAGES = ("count", "delete", "copy out", "decode", "validate", "gate", "score", "encode", "copy in", "commit")


def timings_ms(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    """The median and (min-max) of a figure's runs."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def verdict(value: float, goal: float) -> str:
    return f"goal >= {goal:,.0f}: {'met' if value >= goal else 'MISSED'}"


# --- scoring: in process -------------------------------------------------------------------------


def feature_columns(settings: DatabaseSettings, model: MLEModel, rows: int) -> dict[str, Any]:
    """The first `rows` clients of feature_store as validated columns (what score_columns takes)."""
    names = model.feature_schema.names
    conn = db.connect(settings)
    try:
        with conn.cursor() as cur:
            raw = db.copy_out(cur, f"SELECT idx, {', '.join(names)} FROM feature_store ORDER BY idx LIMIT {rows}")
    finally:
        conn.close()
    return model.feature_schema.validate_columns({n: raw[n] for n in names}, raw["idx"])


def in_process(model: MLEModel, columns: dict[str, Any], rounds: int) -> list[str]:
    n = len(next(iter(columns.values())))
    frame = pd.DataFrame({name: columns[name] for name in model.feature_schema.names})
    frame["attr_b"] = frame["attr_b"].where(frame["attr_b"].notna(), np.nan)  # the frame's missing category
    pipeline = model.pipeline_  # type: ignore[attr-defined]  # CustomerModel
    model.score_columns({k: v[:1000] for k, v in columns.items()})  # compiled on first use: not timed
    ours, theirs, gate = [], [], []
    gate_check = model.ood_gate_.out_of_distribution if model.ood_gate_ is not None else None
    if gate_check is not None:
        gate_check({k: v[:1000] for k, v in columns.items()})
    with threadpool_limits(limits=1):
        for _ in range(rounds):
            started = time.perf_counter()
            labels, p = model.score_columns(columns)
            ours.append(n / (time.perf_counter() - started))
            started = time.perf_counter()
            reference = pipeline.predict_proba(frame)[:, 1]
            theirs.append(n / (time.perf_counter() - started))
            if gate_check is not None:
                started = time.perf_counter()
                gate_check(columns)
                gate.append(n / (time.perf_counter() - started))
    threshold = model.decision_threshold
    flips = int(((reference >= threshold) != (labels == 1)).sum()) if threshold is not None else 0
    engine = model.scoring()
    best = statistics.median(ours)
    lines = [
        f"In process, one thread, {n:,} rows of feature_store (validated columns), {rounds} rounds: "
        "median rows/s (min-max)",
        "",
        "| path | rows/s | x scikit-learn |",
        "|---|---:|---:|",
        f"| `score_columns` ({engine['path']}: {engine['engine']}) | {spread(ours)} | "
        f"{best / statistics.median(theirs):.1f} |",
        f"| scikit-learn `Pipeline.predict_proba` (one thread) | {spread(theirs)} | 1.0 |",
    ]
    if gate:
        lines.append(f"| the gate's columnar check (`OODGate.out_of_distribution`), for context | {spread(gate)} | |")
    lines += [
        "",
        f"`score_columns` against scikit-learn on these rows: max |Δp| {float(np.max(np.abs(p - reference))):.1e}, "
        f"{flips} label flip(s). {verdict(best, IN_PROCESS_GOAL)} ({best:,.0f} rows/s).",
    ]
    return lines


def formats(settings: DatabaseSettings, model: MLEModel, rounds: int) -> list[str]:
    """feature_store's idx and features read whole with COPY, binary and decoded (what batch
    scoring does, by chunks) against CSV parsed by pandas' C parser, each into NumPy columns."""
    names = ["idx", *model.feature_schema.names]
    query = f"SELECT {', '.join(names)} FROM feature_store ORDER BY idx"
    kinds = {"idx": "integer", **model.feature_schema.kinds}
    conn = db.connect(settings)
    times: dict[str, list[float]] = {"binary": [], "csv": []}
    rows = 0
    try:
        with conn.cursor() as cur:
            types = db.describe(cur, query)
            encoding = db.client_encoding(cur)
            for _ in range(rounds):
                started = time.perf_counter()
                copied = db.read_binary(cur, query)
                rows = len(db.decode_binary(copied, types, encoding)["idx"])
                times["binary"].append(time.perf_counter() - started)
                del copied
                started = time.perf_counter()
                buffer = io.BytesIO()
                cur.copy_expert(f"COPY ({query}) TO STDOUT (FORMAT csv)", buffer)
                buffer.seek(0)
                pd.read_csv(
                    buffer,
                    header=None,
                    names=names,
                    engine="c",
                    dtype={n: (object if k == "category" else "float64") for n, k in kinds.items()},
                    keep_default_na=False,
                    na_values={n: [""] for n in names},  # NULL and '' both arrive as an empty field
                )
                times["csv"].append(time.perf_counter() - started)
    finally:
        conn.close()
    return [
        f"Reading feature_store into NumPy columns ({rows:,} clients, idx and the features, {rounds} rounds): "
        "median seconds (min-max)",
        "",
        "| COPY format | s | rows/s |",
        "|---|---:|---:|",
        f"| binary, decoded by `db.decode_binary` (batch scoring's path) | {spread(times['binary'], '.2f')} | "
        f"{rows / statistics.median(times['binary']):,.0f} |",
        f"| CSV, parsed by pandas' C parser (`read_csv`) | {spread(times['csv'], '.2f')} | "
        f"{rows / statistics.median(times['csv']):,.0f} |",
        "",
        "CSV also loses a distinction: the parser reads a NULL text and an empty string alike.",
    ]


# --- scoring: end to end -------------------------------------------------------------------------


def old_path(reader: DatabaseSettings, writer: DatabaseSettings, model: MLEModel, day: date) -> float:
    """The previous batch_predictions asset, as it was: feature_store's rows through the cursor
    into a DataFrame, scored, one tuple per row, `execute_values` after the day's delete."""
    columns = ["idx", *model.feature_schema.names]
    started = time.perf_counter()
    conn = db.connect(reader)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(columns)} FROM feature_store ORDER BY idx")
            frame = pd.DataFrame(cur.fetchall(), columns=columns)
    finally:
        conn.close()
    labels, probabilities = model.predict_labels_and_probabilities(frame.drop(columns="idx"))
    version = model.version_ or "unversioned"
    rows = [
        (day, int(i), int(label), float(p), version)
        for i, label, p in zip(frame["idx"], labels, probabilities, strict=True)
    ]
    conn = db.connect(writer)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM batch_predictions WHERE partition_date = %s", (day,))
            execute_values(
                cur,
                "INSERT INTO batch_predictions (partition_date, client_idx, label, probability, model_version)"
                " VALUES %s",
                rows,
                page_size=5_000,
            )
    finally:
        conn.close()
    return len(rows) / (time.perf_counter() - started)


DAY = date(2026, 1, 2)


def ours(cluster: localdb.LocalCluster, model: MLEModel, day: date, overlap: bool = True) -> Outcome:
    outcome = score_partition(cluster.settings("ds"), cluster.settings("mle"), model, day, overlap=overlap)
    if not outcome.published:
        raise SystemExit(f"scoring {day} did not publish: {outcome.problems}")
    return outcome


def empty_scores(cluster: localdb.LocalCluster) -> None:
    """Every run starts from the same state: batch_predictions empty and the WAL checkpointed
    (otherwise each run adds 1.5 M rows, and autovacuum and checkpoints land on later runs)."""
    cluster.psql("TRUNCATE batch_predictions")
    cluster.psql("CHECKPOINT")


# A daily run as Dagster's executor starts it: a fresh process that imports the asset's module,
# loads the champion (verifying it, compiling the gate's kernels) and scores.
COLD = """
import sys, time
from pathlib import Path
started = time.perf_counter()
from orchestration.assets.scoring import champion, score_partition
from machine_learning_engineering.config import DatabaseSettings
from datetime import date
env = {"DB_HOSTNAME": "127.0.0.1", "DB_PORT": sys.argv[2]}
model = champion(Path(sys.argv[1]), "customer")
loaded = time.perf_counter()
outcome = score_partition(DatabaseSettings.from_env("ds", env), DatabaseSettings.from_env("mle", env), model,
                          date.fromisoformat(sys.argv[3]))
assert outcome.published, outcome.problems
print(loaded - started, outcome.seconds, time.perf_counter() - started, outcome.scored)
"""


def cold(cluster: localdb.LocalCluster, models: Path) -> tuple[float, float, float, int]:
    """(import + load seconds, scoring seconds, process total, rows) of one run in a new process."""
    empty_scores(cluster)
    done = subprocess.run(
        [sys.executable, "-c", COLD, str(models), str(cluster.port), DAY.isoformat()],
        check=True,
        capture_output=True,
        text=True,
    )
    load, run, total, rows = done.stdout.split()
    return float(load), float(run), float(total), int(rows)


def end_to_end(cluster: localdb.LocalCluster, model: MLEModel, rounds: int, models: Path) -> list[str]:
    """`models`: where `model` is the champion (for the runs in a new process)."""
    reader, writer = cluster.settings("ds"), cluster.settings("mle")
    fresh = [cold(cluster, models) for _ in range(rounds)]
    clients = fresh[0][3]
    new: list[Outcome] = []
    old: list[float] = []
    sequential: list[Outcome] = []
    rerun: list[Outcome] = []
    no_gate: list[Outcome] = []
    for _ in range(rounds):  # the variants alternate, each from an empty table
        empty_scores(cluster)
        new.append(ours(cluster, model, DAY))
        empty_scores(cluster)
        old.append(old_path(reader, writer, model, DAY))
        empty_scores(cluster)
        sequential.append(ours(cluster, model, DAY, overlap=False))
        empty_scores(cluster)
        gate, model.ood_gate_ = model.ood_gate_, None  # what the gate costs: the same version without it
        try:
            no_gate.append(ours(cluster, model, DAY))
        finally:
            model.ood_gate_ = gate
        empty_scores(cluster)
        ours(cluster, model, DAY)
        rerun.append(ours(cluster, model, DAY))  # the same day again: delete, then COPY

    def rate(outcomes: Sequence[Outcome]) -> list[float]:
        return [o.scored / o.seconds for o in outcomes]

    best = statistics.median(rate(new))
    lines = [
        f"End to end: all {clients:,} clients of feature_store scored from the database into a day of "
        f"batch_predictions, {rounds} rounds, each run into an empty table after a CHECKPOINT: median rows/s "
        "(min-max), median seconds",
        "",
        "| path | rows/s | s | x previous path |",
        "|---|---:|---:|---:|",
        f"| `score_partition`: COPY out, decode, validate, gate, score, COPY in; stages overlapped "
        f"(new day) | {spread(rate(new))} | {statistics.median(o.seconds for o in new):.2f} | "
        f"{best / statistics.median(old):.1f} |",
        f"| the same, in a new process each (as Dagster starts a run's step: the COPY decoder compiles on "
        f"the first chunk) | {spread([clients / f[1] for f in fresh])} | "
        f"{statistics.median(f[1] for f in fresh):.2f} | |",
        f"| the same, every stage in turn (new day) | {spread(rate(sequential))} | "
        f"{statistics.median(o.seconds for o in sequential):.2f} | |",
        f"| the same, overlapped, re-run of a day that holds scores (delete + COPY) | {spread(rate(rerun))} | "
        f"{statistics.median(o.seconds for o in rerun):.2f} | |",
        f"| the same, overlapped, without the gate (in_distribution NULL; new day) | {spread(rate(no_gate))} | "
        f"{statistics.median(o.seconds for o in no_gate):.2f} | |",
        f"| previous path: cursor rows into a DataFrame, execute_values, no gate (new day) | {spread(old)} | "
        f"{statistics.median(clients / r for r in old):.2f} | 1.0 |",
        "",
        f"{verdict(best, END_TO_END_GOAL)} ({best:,.0f} rows/s).",
        "",
        f"Where the time goes: seconds per stage for {clients:,} clients, median of {rounds} runs (min-max). "
        "In turn, the stages add up to the wall time; overlapped, one thread reads the next chunk and "
        "one writes the last one while two validate, judge and score, so their sum (over threads, "
        "slowed by sharing two cores) exceeds the wall time. `copy out` and `copy in` are mostly "
        "PostgreSQL's own work (another process).",
        "",
        "| stage | in turn (s) | share | overlapped (s, summed over threads) |",
        "|---|---:|---:|---:|",
    ]
    total = statistics.median(o.seconds for o in sequential)
    for stage in STAGES:
        turn = [o.stages.seconds.get(stage, 0.0) for o in sequential]
        lapped = [o.stages.seconds.get(stage, 0.0) for o in new]
        lines.append(
            f"| {stage} | {spread(turn, '.3f')} | {statistics.median(turn) / total:.0%} | {spread(lapped, '.3f')} |"
        )
    lines.append(f"| wall time | {spread([o.seconds for o in sequential], '.3f')} | 100% | "
                 f"{spread([o.seconds for o in new], '.3f')} |")  # fmt: skip
    lines += [
        "",
        f"In a new process, before scoring: imports and loading the champion (files verified, the compiled "
        f"scorer checked against scikit-learn, the gate's kernels compiled) {spread([f[0] for f in fresh], '.2f')} s; "
        f"the whole process {spread([f[2] for f in fresh], '.2f')} s.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=1_500_000)
    parser.add_argument("--compare-sample", type=int, default=100_000, help="rows for the model-family comparison")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--rounds", type=int, default=3, help="runs per scoring figure (median, min-max)")
    parser.add_argument("--in-process-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raw = dataset(args.data_dir, args.customers)
    lines: list[str] = []
    with localdb.temporary_cluster(fast=True) as cluster:
        with etl_transaction(cluster.settings("etl")) as cur:
            load_customers(cur, raw)
            build_features(cur)
        settings = TrainSettings.from_env({"DB_HOSTNAME": "127.0.0.1", "DB_PORT": str(cluster.port)})
        started = time.perf_counter()
        frame = read_training_data(settings)
        read_seconds = time.perf_counter() - started

        started = time.perf_counter()
        model, holdout = train(frame, test_size=0.2, seed=42)
        train_seconds = time.perf_counter() - started
        lines.append(
            f"Model benchmark: {len(frame):,} clients (train {model.training_['rows']:,}, holdout {len(holdout):,})"
        )
        if "accuracy" in args.parts:
            lines += accuracy(raw, model, holdout, read_seconds, train_seconds)
        if "comparison" in args.parts:
            lines += comparison(frame, args.compare_sample)
        if "scoring" in args.parts:
            with tempfile.TemporaryDirectory(prefix="bench-model-") as models:
                version = model.save(Path(models)).name
                registry.promote(Path(models), version, "bench-model")
                champion = model_class("customer").load(Path(models), version)
                columns = feature_columns(cluster.settings("ds"), champion, args.in_process_rows)
                lines += ["", *in_process(champion, columns, args.rounds)]
                del columns
                lines += ["", *formats(cluster.settings("ds"), champion, args.rounds)]
                lines += ["", *end_to_end(cluster, champion, args.rounds, Path(models))]
    lines += ["", "Two shared cores: figures are indicative (other jobs run beside the benchmark)."]
    text = "\n".join(lines)
    print(text)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.md").write_text(text + "\n")
    return 0


def accuracy(raw: Path, model: Any, holdout: pd.DataFrame, read_seconds: float, train_seconds: float) -> list[str]:
    truth = pd.read_csv(truth_file(raw)).set_index("idx")["p_label"]
    best = roc_auc_score(holdout["label"], truth.loc[holdout["idx"]].to_numpy())
    auc = model.evaluation_["metrics"]["roc_auc"]

    one_row = holdout.head(1)
    batch = holdout.head(10_000)
    model.predict(one_row)  # warm-up
    single = timings_ms(lambda: model.predict(one_row), 1_000)
    many = timings_ms(lambda: model.predict(batch), 20)
    p50, p99 = statistics.quantiles(single, n=100)[49], statistics.quantiles(single, n=100)[98]
    batch_ms = statistics.median(many)
    base = model.evaluation_["baselines"]
    return [
        "",
        "| measure | value |",
        "|---|---:|",
        f"| read feature_store (ds_user, pandas) | {read_seconds:.1f} s |",
        f"| train (fit + threshold + holdout evaluation + gate + compiled scorer) | {train_seconds:.1f} s |",
        f"| holdout ROC AUC | {auc:.4f} |",
        f"| best achievable ROC AUC (true probabilities, same holdout) | {best:.4f} |",
        f"| gap | {best - auc:.4f} (goal <= {GOAL}: {'met' if best - auc <= GOAL else 'MISSED'}) |",
        f"| no-skill baselines ROC AUC (majority / stratified) | {base['majority']['roc_auc']:.3f} / "
        f"{base['stratified']['roc_auc']:.3f} |",
        f"| single-row predict p50 / p99 | {p50:.2f} ms / {p99:.2f} ms |",
        f"| 10,000-row predict (median of 20) | {batch_ms:.1f} ms ({10_000 / batch_ms * 1000:,.0f} rows/s) |",
    ]


def comparison(frame: pd.DataFrame, sample: int) -> list[str]:
    table = compare_models(frame, folds=5, sample=sample)
    lines = [
        "",
        f"Model families, {sample:,}-row sample, 5-fold stratified CV:",
        "",
        "| model | ROC AUC | ± | log loss | accuracy | F1 at 0.5 | fit s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.model} | {row.roc_auc:.4f} | {row.roc_auc_std:.4f} | {row.log_loss:.4f} | {row.accuracy:.4f} | "
            f"{row.f1_at_half:.4f} | {row.fit_seconds:.1f} |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
