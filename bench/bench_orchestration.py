"""Orchestration overhead: the graph through Dagster against the plain CLI, in one run.

Both sides do the same work from an empty database on the same generated files: load the
customer tables and every sales month, build feature_store, train a candidate and promote it.
The CLI side is `companydata-etl etl` then `companydata-train`; the Dagster side is the
`dagster asset materialize` command on `orchestration.definitions` (run and event storage in a
fresh DAGSTER_HOME, the default multiprocess executor): the customer tables, one run for the
whole range of sales months, then feature_store and the model. Both run as processes, so both
pay for their interpreter's start. Each round gets a fresh cluster; the sides alternate; medians
are reported with the spread. Goal: Dagster <= 1.3 x the CLI's wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from data_engineering.generate import GeneratorConfig, generate
from data_engineering.load import available_months
from testkit import localdb

GOAL = 1.3
BIN = Path(sys.executable).parent


def dataset(data_dir: Path, customers: int) -> Path:
    raw = data_dir / f"orchestration-{customers}"
    if not (raw / "labels.csv").is_file():
        generate(raw, GeneratorConfig(customers=customers))
    return raw


def timed(commands: list[list[str]], env: Mapping[str, str]) -> float:
    started = time.perf_counter()
    for command in commands:
        result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def one_round(raw: Path, side: str) -> float:
    with localdb.temporary_cluster() as cluster, tempfile.TemporaryDirectory(prefix="bench-orch-") as work:
        env = {
            **os.environ,
            "DB_HOSTNAME": "127.0.0.1",
            "DB_PORT": str(cluster.port),
            "RAW_DATA_DIR": str(raw),
            "MODEL_DIR": str(Path(work) / "models"),
            "DAGSTER_HOME": str(Path(work) / "dagster"),
            "TRAIN_WAIT_TIMEOUT": "60",
        }
        Path(env["DAGSTER_HOME"]).mkdir()
        if side == "cli":
            return timed([[str(BIN / "companydata-etl"), "etl"], [str(BIN / "companydata-train")]], env)
        months = available_months(raw)
        dagster = [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", "--select"]
        return timed(
            [
                [*dagster, "stores,customer_profiles,customer_activity,labels"],
                [*dagster, "sales,monthly_sales", "--partition-range", f"{months[0]}...{months[-1]}"],
                [*dagster, "feature_store"],
                [*dagster, "model"],
            ],
            env,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raw = dataset(args.data_dir, args.customers)
    times: dict[str, list[float]] = {"cli": [], "dagster": []}
    for i in range(args.rounds):
        for side in ("cli", "dagster") if i % 2 == 0 else ("dagster", "cli"):
            times[side].append(one_round(raw, side))
            print(f"round {i + 1}: {side} {times[side][-1]:.1f} s", flush=True)
    cli, dag = statistics.median(times["cli"]), statistics.median(times["dagster"])
    ratio = dag / cli
    text = "\n".join(
        [
            f"Orchestration benchmark: {args.customers:,} clients, {len(available_months(raw))} sales months, "
            f"median of {args.rounds} rounds (min-max)",
            "",
            "| path | wall s | ratio to CLI |",
            "|---|---:|---:|",
            f"| CLI: companydata-etl etl + companydata-train | {cli:.1f} ({min(times['cli']):.1f}-"
            f"{max(times['cli']):.1f}) | 1.00 |",
            f"| Dagster: 4 materialize runs (customers, sales range, feature_store, model) | {dag:.1f} "
            f"({min(times['dagster']):.1f}-{max(times['dagster']):.1f}) | {ratio:.2f} |",
            "",
            f"goal: Dagster <= {GOAL} x the CLI: {'met' if ratio <= GOAL else 'MISSED'}",
        ]
    )
    print(text)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "orchestration.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
