"""ETL benchmark: our loads against `psql \\copy` of the same files, in one run, on one cluster.

Dataset: the generator at ten times the real scale (1,500,000 clients), cached under
--data-dir. Baselines, each timed as the wall time of one `psql -c "\\copy ..."`:
  * same-shaped: a table made from the very same DDL as ours (same types and keys);
  * bare: the same columns and types with no keys or checks (context only).
Ours: each step of `load_customers` / `load_sales` (create, COPY, checks) as it logs itself.
Goal: every load at >= 70 % of the same-shaped \\copy rows/s.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import time
from pathlib import Path

from data_engineering.db import etl_transaction, read_sql, table_columns, table_sql
from data_engineering.features import build_features
from data_engineering.generate import GeneratorConfig, generate
from data_engineering.load import CUSTOMER_TABLES, available_months, load_customers, load_sales, sales_file
from testkit import localdb

GOAL = 0.70


def dataset(data_dir: Path, customers: int) -> Path:
    """The generated raw files (cached), with each client's true P(label = 1) beside them."""
    raw = data_dir / f"raw-{customers}"
    if not (raw / "labels.csv").exists() or not truth_file(raw).exists():
        started = time.perf_counter()
        generate(raw, GeneratorConfig(customers=customers), truth=truth_file(raw))
        print(f"generated {customers:,} clients in {time.perf_counter() - started:.1f} s")
    return raw


def truth_file(raw: Path) -> Path:
    return raw.parent / f"{raw.name}-truth.csv"


def psql_copy(cluster: localdb.LocalCluster, table: str, path: Path, columns: list[str]) -> float:
    command = f"\\copy {table} ({', '.join(columns)}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    started = time.perf_counter()
    subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-qX", "-U", localdb.SUPERUSER, "-d", localdb.DATABASE, "-c", command],
        check=True,
        env=cluster.psql_env(),
        capture_output=True,
    )
    return time.perf_counter() - started


def baseline_table(cluster: localdb.LocalCluster, ddl: str, table: str, bare: bool, **literals: object) -> list[str]:
    settings = cluster.settings("etl")
    with etl_transaction(settings) as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        statement = table_sql(ddl, table=table, **literals).as_string(cur)
        # The sales staging table is temporary; its baseline twin must outlive the transaction.
        cur.execute(statement.replace("CREATE TEMPORARY TABLE", "CREATE TABLE").replace("ON COMMIT DROP", ""))
        if bare:  # keep columns and types, drop every key and check
            cur.execute(f"CREATE TABLE {table}_bare (LIKE {table}); DROP TABLE {table}")
            cur.execute(f"ALTER TABLE {table}_bare RENAME TO {table}")
        return table_columns(cur, table)


def run(raw: Path, rounds: int) -> list[tuple[str, int, float, float, float]]:
    with localdb.temporary_cluster(fast=False) as cluster:
        return _run(cluster, raw, rounds)


def _run(cluster: localdb.LocalCluster, raw: Path, rounds: int) -> list[tuple[str, int, float, float, float]]:
    settings = cluster.settings("etl")
    rows: dict[str, int] = {}
    ours: dict[str, list[float]] = {}
    same: dict[str, list[float]] = {}
    bare: dict[str, list[float]] = {}
    months = available_months(raw)
    for _ in range(rounds):
        for table in CUSTOMER_TABLES:
            path = raw / f"{table}.csv"
            for kind, target in (("same", same), ("bare", bare)):
                name = f"baseline_{table}"
                columns = baseline_table(cluster, f"tables/{table}.sql", name, bare=kind == "bare")
                target.setdefault(table, []).append(psql_copy(cluster, name, path, columns))
        with etl_transaction(settings) as cur:
            for step in load_customers(cur, raw):
                table = step.step.removeprefix("load ")
                rows[table] = step.rows
                ours.setdefault(table, []).append(step.seconds)
        # Sales: all months, each month one \copy, against our per-month load.
        for kind, target in (("same", same), ("bare", bare)):
            total = 0.0
            for month in months:
                columns = baseline_table(
                    cluster, "tables/sales_staging.sql", "baseline_sales", kind == "bare", month=month
                )
                total += psql_copy(cluster, "baseline_sales", sales_file(raw, month), columns)
            target.setdefault("sales (all months)", []).append(total)
        with etl_transaction(settings) as cur:
            cur.execute(read_sql("sales_tables.sql"))
            cur.execute("TRUNCATE sales, monthly_sales")
            steps = load_sales(cur, raw, months)
        rows["sales (all months)"] = sum(s.rows for s in steps)
        ours.setdefault("sales (all months)", []).append(sum(s.seconds for s in steps))
        with etl_transaction(settings) as cur:
            feature_step = build_features(cur)
        ours.setdefault("build-features", []).append(feature_step.seconds)
        rows["build-features"] = feature_step.rows
    report = []
    for step, n in rows.items():
        t_ours = statistics.median(ours[step])
        t_same = statistics.median(same[step]) if step in same else float("nan")
        t_bare = statistics.median(bare[step]) if step in bare else float("nan")
        report.append((step, n, t_ours, t_same, t_bare))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench/data"))
    parser.add_argument("--customers", type=int, default=1_500_000)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; medians are reported")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raw = dataset(args.data_dir, args.customers)
    report = run(raw, args.rounds)
    lines = [
        f"ETL benchmark: {args.customers:,} clients, median of {args.rounds} rounds",
        "",
        "| step | rows | ours s | ours rows/s | \\copy same-shaped rows/s | ours / same-shaped | \\copy bare rows/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    failed = []
    for step, n, t_ours, t_same, t_bare in report:
        if t_same == t_same:  # a load with a baseline
            ratio = t_same / t_ours
            if ratio < GOAL and n >= 1000:
                failed.append(step)
            speeds = f"{n / t_ours:,.0f} | {n / t_same:,.0f} | {ratio:.0%} | {n / t_bare:,.0f}"
            lines.append(f"| {step} | {n:,} | {t_ours:.2f} | {speeds} |")
        else:
            lines.append(f"| {step} | {n:,} | {t_ours:.2f} | {n / t_ours:,.0f} | | | |")
    lines += [
        "",
        f"goal: loads of 1,000 rows or more at >= {GOAL:.0%} of same-shaped \\copy: "
        + ("met" if not failed else f"MISSED by {', '.join(failed)}"),
    ]
    text = "\n".join(lines)
    print(text)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "etl.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
