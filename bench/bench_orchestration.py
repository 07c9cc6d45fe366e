"""Orchestration overhead: the graph through Dagster against the plain CLI, in one run.

Each side does the same work from an empty database on the same generated files: load the
customer tables and every sales month, build feature_store, train a candidate and promote it.

- CLI: `companydata-etl etl` then `companydata-train` (two processes).
- Dagster, one process: the stack's jobs on `orchestration.definitions` -- `customer_etl_job`
  (customer tables, feature_store), `sales_job` over the whole range of months as one run (the
  single-run backfill), `training_job` -- each a real run recorded in a Dagster instance
  configured like the stack's (orchestration/deploy/dagster.yaml: PostgreSQL storage in the
  `dagster` database, pooled connections, DAGSTER_EVENT_BATCH_SIZE as in Compose), steps in
  the run's process (`execute_in_process`). This is Dagster's own cost -- runs, event log, asset
  checks, resources -- and the goal is measured on it.
- Dagster, a process per run and per step: the same three jobs with `dagster job execute` and the
  definitions' multiprocess executor, as the daemon launches them. Reported, not a goal: each
  process imports Dagster, pandas and the definitions again (a few seconds each).

The Dagster instance's tables are created before the clock starts (once per deployment, like
the database bootstrap on both sides). Each round gets a fresh cluster; the sides alternate;
medians are reported with the spread. Goal: Dagster (one process) <= 1.3 x the CLI's wall time.
"""

from __future__ import annotations

import argparse
import json
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
from testkit import dagster_home, localdb

GOAL = 1.3
BIN = Path(sys.executable).parent
SIDES = ("cli", "dagster", "dagster-processes")
JOBS = ("customer_etl_job", "sales_job", "training_job")
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

# The Dagster side in one process: the three jobs as runs of the stack's instance.
IN_PROCESS = """
import json, sys
from dagster import DagsterInstance
from orchestration.definitions import defs
tags = json.loads(sys.argv[1])
with DagsterInstance.get() as instance:
    for job in sys.argv[2:]:
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, tags=tags if job == "sales_job" else None, raise_on_error=False
        )
        if not result.success:
            sys.exit(f"{job} failed")
"""


def dataset(data_dir: Path, customers: int) -> Path:
    raw = data_dir / f"orchestration-{customers}"
    if not (raw / "labels.csv").is_file():
        generate(raw, GeneratorConfig(customers=customers))
    return raw


def run(command: list[str], env: Mapping[str, str]) -> None:
    result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def timed(commands: list[list[str]], env: Mapping[str, str]) -> float:
    started = time.perf_counter()
    for command in commands:
        run(command, env)
    return time.perf_counter() - started


def one_round(raw: Path, side: str) -> float:
    with localdb.temporary_cluster() as cluster, tempfile.TemporaryDirectory(prefix="bench-orch-") as work:
        env = {
            **os.environ,
            "DB_HOSTNAME": "127.0.0.1",
            "DB_PORT": str(cluster.port),
            "RAW_DATA_DIR": str(raw),
            "MODEL_DIR": str(Path(work) / "models"),
            "TRAIN_WAIT_TIMEOUT": "60",
        }
        if side == "cli":
            return timed([[str(BIN / "companydata-etl"), "etl"], [str(BIN / "companydata-train")]], env)
        env.update(dagster_home.prepare(Path(work) / "dagster", cluster))
        run([str(BIN / "dagster"), "instance", "migrate"], env)  # its tables, before the clock
        months = available_months(raw)
        tags = json.dumps(dict(zip(RANGE_TAGS, (str(months[0]), str(months[-1])), strict=True)))
        if side == "dagster":
            return timed([[sys.executable, "-c", IN_PROCESS, tags, *JOBS]], env)
        execute = [str(BIN / "dagster"), "job", "execute", "-m", "orchestration.definitions", "-j"]
        return timed([[*execute, job, *(["--tags", tags] if job == "sales_job" else [])] for job in JOBS], env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raw = dataset(args.data_dir, args.customers)
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for i in range(args.rounds):
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:
            times[side].append(one_round(raw, side))
            print(f"round {i + 1}: {side} {times[side][-1]:.1f} s", flush=True)
    median = {side: statistics.median(t) for side, t in times.items()}
    ratio = median["dagster"] / median["cli"]

    def row(label: str, side: str) -> str:
        t = times[side]
        return f"| {label} | {median[side]:.1f} ({min(t):.1f}-{max(t):.1f}) | {median[side] / median['cli']:.2f} |"

    text = "\n".join(
        [
            f"Orchestration benchmark: {args.customers:,} clients, {len(available_months(raw))} sales months, "
            f"median of {args.rounds} rounds (min-max)",
            "",
            "| path | wall s | ratio to CLI |",
            "|---|---:|---:|",
            row("CLI: companydata-etl etl + companydata-train", "cli"),
            row("Dagster, one process: 3 runs (customers + feature_store, sales range, model)", "dagster"),
            row("Dagster, `dagster job execute` per run, multiprocess executor", "dagster-processes"),
            "",
            f"goal: Dagster (one process) <= {GOAL} x the CLI: {'met' if ratio <= GOAL else 'MISSED'} ({ratio:.2f})",
        ]
    )
    print(text)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "orchestration.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
