"""Out-of-distribution gate benchmark: what the gate costs /predict, and how often it flags ordinary rows.

Setup: the generator's 150,000 clients loaded into a throwaway cluster by the real ETL and
trained on (`data_science.train.train`, which fits the gate), as `make bench-serve` does. The
same fitted model is saved twice: as training saves it (with its gate) and without its gate
(every answer says "no gate in this version"; everything else, the compiled scorer too, as
saved). Each is served by the production `create_app`.

Latency, two ways, each A/B (the two versions alternate, so that noise from other processes
falls on both) and each `--runs` runs with the median run reported:
  * as the serving benchmark measures it (`make bench-serve`; needs wrk): each version under
    its own gunicorn (the production configuration, access log off), `wrk` at concurrency 1
    for `--seconds` per run against POST /predict with the challenge's request;
  * in-process, through the production `create_app` (Flask test client, one thread): in each
    run `--rounds` rounds alternate between the two apps (A B, B A, ...), each round
    `--requests` POST /predict (and `--batches` POST /predict/batch of 1,000 holdout rows); a
    run keeps each app's fastest round (the least disturbed by other processes). Here the
    prediction log's records are built as always but only counted, not written: the database
    (another process on the same cores) would blur an in-process comparison; the served
    figures include it.
The gate's own cost is measured too: its check of one row, against scikit-learn's
`IsolationForest.score_samples` on the same row (the same trees, refitted from the same input
and seed). Goal: the gate costs at most 10 % of /predict.

Flag rates: the share of ordinary rows flagged, for the generated data (training rows and the
holdout) and, when they are there, the real challenge files (../shared/challenge-data: no
activity file, so scd_a and scd_b are missing for every client), split the same way.

    .venv/bin/python bench/bench_ood.py              # about two minutes; writes bench/results/ood.md
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_etl import dataset
from bench_serve import POST_SCRIPT, Run, wrk
from sklearn.ensemble import IsolationForest

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import load_customers
from data_science.config import TrainSettings
from data_science.features import EXAMPLE_REQUEST, SCHEMA
from data_science.model import CustomerModel
from data_science.train import read_training_data, split, train
from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder
from machine_learning_engineering import registry
from machine_learning_engineering.ood import OODGate, _matrix
from machine_learning_engineering.prediction_log import PredictionLogger
from testkit import localdb
from testkit.process import gunicorn

BATCH_ROWS = 1_000
LARGE_ROWS = 10_000
CHALLENGE_DATA = Path(__file__).resolve().parents[2] / "shared" / "challenge-data"


class CountingLogger(PredictionLogger):
    """Takes records as the real logger does (built by `PredictionRecord.batch`), counts them, writes nothing."""

    taken = 0

    def log(self, records: Any) -> None:
        self.taken += len(records)


def without_gate(model: CustomerModel, model_dir: Path) -> str:
    """The same version saved without its gate (everything else as saved, the compiled scorer
    too: the A/B measures the gate and nothing else)."""
    gate, model.ood_gate_ = model.ood_gate_, None
    try:
        return model.save(model_dir).name
    finally:
        model.ood_gate_ = gate


def client_for(model_dir: Path, logger: PredictionLogger) -> Any:
    settings = ServeSettings(model_dir=model_dir, model_poll_seconds=600.0)
    holder = ModelHolder(CustomerModel, model_dir, 600.0, logger)
    holder.refresh()
    return create_app(settings, holder).test_client()


def round_ms(client: Any, path: str, body: Any, n: int) -> float:
    """Mean ms per request over n requests (each must answer 200)."""
    started = time.perf_counter()
    for _ in range(n):
        response = client.post(path, json=body)
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
    return (time.perf_counter() - started) * 1000 / n


def ab(runs: int, rounds: int, measure: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Per name, each run's fastest round. Rounds interleave the names, in turn first (A B, B A,
    ...); the fastest round is the one other processes disturbed least (on a shared machine the
    median round still carries their noise, and noise only ever adds time)."""
    out: dict[str, list[float]] = {name: [] for name in measure}
    names = list(measure)
    for _ in range(runs):
        seen: dict[str, list[float]] = {name: [] for name in measure}
        for i in range(rounds):
            for name in names if i % 2 == 0 else reversed(names):
                seen[name].append(measure[name]())
        for name in measure:
            out[name].append(min(seen[name]))
    return out


def per_call_ms(fn: Callable[[], object], n: int, runs: int) -> float:
    results = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - started) * 1000 / n)
    return statistics.median(results)


def served(
    cluster: localdb.LocalCluster, dirs: dict[str, Path], work: Path, seconds: float, runs: int
) -> tuple[list[str], float | None]:
    """wrk at concurrency 1 against each version's own gunicorn, alternating: table rows, and
    what the gate adds to the median p50."""
    if shutil.which("wrk") is None:
        return ["| (wrk not installed: apt-get install wrk) | | | | |"], None
    (work / "predict.json").write_text(json.dumps(EXAMPLE_REQUEST))
    script = work / "predict.lua"
    script.write_text(POST_SCRIPT.format(body=work / "predict.json"))
    inherited = {k: v for k, v in os.environ.items() if not k.endswith("_DB_PASSWORD")}  # cluster defaults
    env = {
        **inherited,
        "DB_HOSTNAME": "127.0.0.1",
        "DB_PORT": str(cluster.port),
        "GUNICORN_ACCESS_LOG": "",
        "GUNICORN_LOG_LEVEL": "warning",
    }
    results: dict[str, list[Run]] = {name: [] for name in dirs}
    with (
        gunicorn({**env, "MODEL_DIR": str(dirs["with gate"])}, localdb.free_port()) as gated,
        gunicorn({**env, "MODEL_DIR": str(dirs["without gate"])}, localdb.free_port()) as plain,
    ):
        urls = {"with gate": gated + "/predict", "without gate": plain + "/predict"}
        for url in urls.values():
            wrk(url, 4, 2, script)  # warm-up: every worker has loaded and used its model
        for _ in range(runs):
            for name, url in urls.items():
                results[name].append(wrk(url, 1, seconds, script))
    p50 = {name: statistics.median(r.p50_ms for r in rs) for name, rs in results.items()}
    rps = {name: statistics.median(r.requests_per_s for r in rs) for name, rs in results.items()}
    errors = sum(r.errors for rs in results.values() for r in rs)
    runs_text = ", ".join(
        f"{g.p50_ms:.2f}/{p.p50_ms:.2f}" for g, p in zip(results["with gate"], results["without gate"], strict=True)
    )
    lines = [
        f"| `/predict`, gunicorn + wrk, concurrency 1: p50 ms | {p50['with gate']:.3f} | {p50['without gate']:.3f} | "
        f"{p50['with gate'] / p50['without gate'] - 1:+.1%} | {runs_text} ({errors} errors) |",
        f"| `/predict`, gunicorn + wrk, concurrency 1: requests/s | {rps['with gate']:,.0f} | "
        f"{rps['without gate']:,.0f} | {rps['without gate'] / rps['with gate'] - 1:+.1%} (time per request) | |",
    ]
    return lines, p50["with gate"] / p50["without gate"] - 1


def goal(served_cost: float | None, in_process: float) -> str:
    def verdict(cost: float) -> str:
        return f"{cost:+.1%}, {'met' if cost <= 0.10 else 'NOT met'}"

    served_text = "" if served_cost is None else f"Served (wrk, p50): {verdict(served_cost)}; "
    return f"{served_text}in-process: {verdict(in_process)}."


def flag_rates(name: str, frame: pd.DataFrame) -> str:
    """A gate fitted on the training split; its flag rates on those rows and on the holdout."""
    fit_part, holdout = split(frame, 0.2, 42)
    gate = OODGate.fit(SCHEMA, fit_part, seed=42)
    verdicts = gate.check_frame(SCHEMA.validate(holdout))
    held = sum(v.in_distribution is False for v in verdicts) / len(verdicts)
    by = {"forest": 0, "range/category": 0, "pair": 0}
    for verdict in verdicts:
        for finding in verdict.findings:
            by["forest" if not finding.features else "pair" if len(finding.features) == 2 else "range/category"] += 1
    detector = gate.spec["detector"]
    return (
        f"| {name} | {len(fit_part):,} | {detector['training_flag_rate']:.2%} | "
        f"{detector['training_flag_rate_all_checks']:.2%} | {len(holdout):,} | {held:.2%} | "
        f"{by['forest']} / {by['pair']} / {by['range/category']} |"
    )


def real_frame() -> pd.DataFrame | None:
    if not (CHALLENGE_DATA / "customer_profiles.csv").exists():
        return None
    profiles = pd.read_csv(CHALLENGE_DATA / "customer_profiles.csv")
    frame = profiles.merge(pd.read_csv(CHALLENGE_DATA / "labels.csv"), on="idx")
    return frame.assign(scd_a=np.nan, scd_b=np.nan)[["idx", "attr_a", "attr_b", "scd_a", "scd_b", "label"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=200, help="/predict requests per round")
    parser.add_argument("--batches", type=int, default=5, help="/predict/batch requests per round")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of one wrk run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ood.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raw = dataset(args.data_dir, args.customers)
    work = Path(tempfile.mkdtemp(prefix="bench-ood-"))
    try:
        return measure(args, raw, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, raw: Path, work: Path) -> int:
    with localdb.temporary_cluster(fast=True) as cluster:
        with etl_transaction(cluster.settings("etl")) as cur:
            load_customers(cur, raw)
            build_features(cur)
        frame = read_training_data(TrainSettings.from_env({"DB_HOSTNAME": "127.0.0.1", "DB_PORT": str(cluster.port)}))
        started = time.perf_counter()
        model, holdout = train(frame, test_size=0.2, seed=42)
        train_seconds = time.perf_counter() - started
        gated_dir, plain_dir = work / "gated", work / "plain"
        gated_version = model.save(gated_dir).name
        registry.promote(gated_dir, gated_version, "bench: with its gate")
        registry.promote(plain_dir, without_gate(model, plain_dir), "bench: the same version without its gate")
        logger = CountingLogger(cluster.settings("mle"))
        clients = {"with gate": client_for(gated_dir, logger), "without gate": client_for(plain_dir, logger)}
        rows = holdout.head(BATCH_ROWS)
        features = json.loads(rows[SCHEMA.names].to_json(orient="records"))  # plain JSON values; NaN as null
        batch = [{"idx": int(i), "features": f} for i, f in zip(rows["idx"], features, strict=True)]
        for client in clients.values():  # warm-up, and a check that both answer as documented
            answer = client.post("/predict", json=EXAMPLE_REQUEST).get_json()
            print(answer)
            round_ms(client, "/predict/batch", batch, 2)
        gc.freeze()  # as gunicorn's workers do after loading the app
        single = ab(
            args.runs,
            args.rounds,
            {
                name: (lambda c=c: round_ms(c, "/predict", EXAMPLE_REQUEST, args.requests))
                for name, c in clients.items()
            },
        )
        batched = ab(
            args.runs,
            max(3, args.rounds // 3),
            {name: (lambda c=c: round_ms(c, "/predict/batch", batch, args.batches)) for name, c in clients.items()},
        )
        assert logger.taken > 0
        dirs = {"with gate": gated_dir, "without gate": plain_dir}
        wrk_lines, served_cost = served(cluster, dirs, work, args.seconds, args.runs)
    gate = model.ood_gate_
    assert gate is not None
    one_row = [EXAMPLE_REQUEST["features"]]
    one_columns = SCHEMA.columns(one_row)  # what the API hands the gate
    clean = SCHEMA.validate(holdout.head(BATCH_ROWS))
    batch_columns = {name: clean[name].to_numpy() for name in SCHEMA.names}
    gate_one = per_call_ms(lambda: gate.check_columns(one_columns), 2000, args.runs)
    gate_batch = per_call_ms(lambda: gate.check_columns(batch_columns), 20, args.runs)
    # What batch scoring asks (`out_of_distribution`: verdicts only) and /predict/batch with
    # 10,000-row columns (`check_columns`), per row.
    clean_large = SCHEMA.validate(holdout.head(LARGE_ROWS))
    large_columns = {name: clean_large[name].to_numpy() for name in SCHEMA.names}
    large_rows = len(clean_large)
    gate_large = per_call_ms(lambda: gate.check_columns(large_columns), 5, args.runs) * 1000 / large_rows
    verdicts_large = per_call_ms(lambda: gate.out_of_distribution(large_columns), 5, args.runs) * 1000 / large_rows
    estimator = IsolationForest(n_estimators=gate.spec["detector"]["trees"], random_state=42).fit(
        _matrix(gate._features, SCHEMA.validate(split(frame, 0.2, 42)[0]))
    )
    one_matrix = _matrix(gate._features, SCHEMA.validate(pd.DataFrame(one_row)))
    assert abs(estimator.score_samples(one_matrix)[0] + gate.forest.score(one_matrix)[0]) <= 1e-12
    sklearn_one = per_call_ms(lambda: estimator.score_samples(one_matrix), 50, args.runs)
    numpy_one = per_call_ms(lambda: gate.forest.score(one_matrix), 2000, args.runs)

    def line(name: str, values: dict[str, list[float]]) -> str:
        gated, plain = statistics.median(values["with gate"]), statistics.median(values["without gate"])
        runs = ", ".join(f"{g:.3f}/{p:.3f}" for g, p in zip(values["with gate"], values["without gate"], strict=True))
        return f"| {name} | {gated:.3f} | {plain:.3f} | {gated / plain - 1:+.1%} | {runs} |"

    in_process = statistics.median(single["with gate"]) / statistics.median(single["without gate"]) - 1
    real = real_frame()
    text = "\n".join(
        [
            f"OOD gate benchmark: model {gated_version} trained on {len(frame):,} clients "
            f"(training with the gate and reference sample: {train_seconds:.1f} s)",
            "",
            f"Median of {args.runs} runs, the two versions alternating (A/B). In-process: production create_app, "
            "Flask test client, one thread, ms per request (a run: the fastest of its interleaved rounds).",
            "",
            "| request | with gate | without gate | gate costs | runs (with/without) |",
            "|---|---:|---:|---:|---|",
            *wrk_lines,
            line("`/predict` in-process, ms", single),
            line(f"`/predict/batch` ({BATCH_ROWS:,} rows) in-process, ms", batched),
            "",
            "| the gate alone | ms |",
            "|---|---:|",
            f"| `OODGate.check_columns`, one row (one compiled pass: values, pairs, forest) | {gate_one:.4f} |",
            f"| `Forest.score`, one row (compiled, {gate.spec['detector']['trees']} trees) | {numpy_one:.4f} |",
            f"| scikit-learn `IsolationForest.score_samples`, the same row and trees | {sklearn_one:.3f} |",
            f"| `OODGate.check_columns`, {BATCH_ROWS:,} rows (one compiled pass) | {gate_batch:.3f} |",
            "",
            "| the gate on many rows | µs per row |",
            "|---|---:|",
            f"| `OODGate.check_columns`, {large_rows:,} rows (verdicts and reasons) | {gate_large:.3f} |",
            f"| `OODGate.out_of_distribution`, {large_rows:,} rows (verdicts only: batch scoring) | "
            f"{verdicts_large:.3f} |",
            "",
            f"Goal: the gate costs at most 10 % of /predict. {goal(served_cost, in_process)}",
            "",
            "| data | training rows | forest flags (training) | all checks (training) | holdout rows | flagged "
            "(holdout) | holdout findings: forest / pair / range-category |",
            "|---|---:|---:|---:|---:|---:|---|",
            flag_rates("generated", frame),
            flag_rates("real challenge files", real) if real is not None else f"| not found: {CHALLENGE_DATA} |",
        ]
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
