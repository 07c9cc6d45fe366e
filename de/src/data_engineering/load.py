"""Load raw files into companydata with COPY, validating as PostgreSQL parses.

The database does the parsing and the checks (types, keys, CHECK constraints) while the file
streams in, so a load runs at COPY speed; when it refuses a row, its error is translated to
the file, line and column that caused it. Customer tables are staged and swapped in when the
caller's transaction ends (data_engineering.db), so a failure anywhere leaves every table as it was.
"""

from __future__ import annotations

import csv
import logging
import re
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor as PgCursor
from tqdm import tqdm

from data_engineering import DataError
from data_engineering.db import EtlCursor, read_sql, source_table, stage, table_columns, table_exists, table_sql
from machine_learning_engineering.db import fetch_one

log = logging.getLogger(__name__)

CUSTOMER_TABLES = ("customer_profiles", "customer_activity", "labels", "stores")
_SALES_DIR = re.compile(r"^(\d{4})-(\d{2})-01$")
_COPY_CONTEXT = re.compile(r"line (?P<line>\d+)(?:, column (?P<column>\w+))?")
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class StepResult:
    step: str
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def log(self) -> None:
        log.info(
            "%s: %s rows in %.2f s (%s rows/s)",
            self.step,
            f"{self.rows:,}",
            self.seconds,
            f"{self.rows_per_second:,.0f}",
        )


def read_header(path: Path) -> list[str]:
    """The header line alone; the rest of the file is PostgreSQL's to parse and judge."""
    try:
        with path.open("rb") as f:
            first = f.readline()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: line 1: not UTF-8 text ({exc.reason})") from None
    header = next(csv.reader([text]), None)
    if not header:
        raise DataError(f"{path}: file is empty; expected a header line")
    return [name.strip() for name in header]


def check_header(path: Path, header: list[str], expected: list[str]) -> None:
    duplicated = sorted({c for c in header if header.count(c) > 1})
    missing = [c for c in expected if c not in header]
    unknown = [c for c in header if c not in expected]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unexpected column(s) {', '.join(unknown)}")
    if duplicated:
        problems.append(f"duplicated column(s) {', '.join(duplicated)}")
    if problems:
        raise DataError(f"{path}: line 1 (header): {'; '.join(problems)}; expected columns {', '.join(expected)}")


def describe_copy_error(path: Path, table: str, exc: psycopg2.Error) -> str:
    """'file: line N, column C: what is wrong' from PostgreSQL's COPY error."""
    diag = exc.diag
    where = _COPY_CONTEXT.search(diag.context or "")
    location = f"line {where['line']}" if where else "during load"
    column = (where["column"] if where else None) or diag.column_name
    if column:
        location += f", column {column}"
    message = (diag.message_primary or str(exc)).replace(table, path.stem)
    if diag.message_detail:
        message += f" ({diag.message_detail.replace(table, path.stem)})"
    return f"{path}: {location}: {message}"


def copy_csv(cur: PgCursor, path: Path, table: str) -> int:
    """Stream a CSV file into `table`; columns are matched by name from the header."""
    header = read_header(path)
    check_header(path, header, table_columns(cur, table))
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, header))
    )
    with (
        path.open("rb") as raw,
        tqdm.wrapattr(
            raw,
            "read",
            total=path.stat().st_size,
            desc=path.name,
            unit="B",
            unit_scale=True,
            disable=not sys.stderr.isatty(),
            leave=False,
        ) as f,
    ):
        try:
            cur.copy_expert(statement, f, size=_COPY_CHUNK)
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:  # class 22 includes bad CSV shape
            raise DataError(describe_copy_error(path, table, exc)) from None
    return cur.rowcount


def find_line(path: Path, **match: str) -> int | None:
    """The line number of the first row whose columns equal `match` (error path only)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if all((row.get(k) or "").strip() == v for k, v in match.items()):
                return reader.line_num
    return None


def _check_activity_history(cur: PgCursor, path: Path, table: str) -> None:
    cur.execute(table_sql("broken_activity_history.sql", table=table))
    broken = cur.fetchall()
    if not broken:
        return
    idx, valid_from, valid_to, next_from = broken[0]
    line = find_line(path, idx=str(idx), valid_from=valid_from.isoformat())
    ends = f"ends {valid_to}" if valid_to else "is open (empty valid_to)"
    raise DataError(
        f"{path}: line {line}, client idx {idx}: the period starting {valid_from} {ends}, but the client's "
        f"next period starts {next_from}; a closed row's valid_to must equal the next row's valid_from"
        + (f" ({len(broken)} such rows or more)" if len(broken) > 1 else "")
    )


def load_customers(cur: EtlCursor, raw_dir: Path) -> list[StepResult]:
    """Stage the four customer tables from the files; they replace the live ones at commit."""
    missing = [f"{raw_dir / t}.csv" for t in CUSTOMER_TABLES if not (raw_dir / f"{t}.csv").is_file()]
    if missing:
        raise DataError(f"missing input file(s): {', '.join(missing)}")
    results = []
    for table in CUSTOMER_TABLES:
        path = raw_dir / f"{table}.csv"
        started = time.perf_counter()
        staged = stage(cur, table)
        cur.execute(table_sql(f"tables/{table}.sql", table=staged))
        rows = copy_csv(cur, path, staged)
        if table == "customer_activity":
            _check_activity_history(cur, path, staged)
        # Statistics now, not whenever autovacuum gets round to it: the next reader joins these.
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(staged)))
        results.append(StepResult(f"load {table}", rows, time.perf_counter() - started))
        results[-1].log()
    if table_exists(cur, "monthly_sales"):  # a renamed store is renamed in the months already loaded
        cur.execute(table_sql("refresh_monthly_sales_locations.sql", sources={"stores": source_table(cur, "stores")}))
        if cur.rowcount:
            log.info("monthly_sales: %s row(s) now carry their store's new location", f"{cur.rowcount:,}")
    return results


def sales_file(raw_dir: Path, month: date) -> Path:
    return raw_dir / "sales" / f"{month:%Y-%m}-01" / "sales.csv"


def available_months(raw_dir: Path) -> list[date]:
    """Months with a folder under sales/, in order; a folder without sales.csv is an error."""
    months = []
    for folder in sorted((raw_dir / "sales").glob("*")):
        match = _SALES_DIR.match(folder.name)
        if not folder.is_dir() or not match or not 1 <= int(match[2]) <= 12:
            log.warning("ignoring %s: sales folders are named YYYY-MM-01", folder)
            continue
        months.append(date(int(match[1]), int(match[2]), 1))
    return months


def loaded_months(cur: PgCursor) -> set[date]:
    if not table_exists(cur, "sales"):
        return set()
    cur.execute("SELECT DISTINCT sale_month FROM sales")
    return {row[0] for row in cur.fetchall()}


def load_sales(cur: PgCursor, raw_dir: Path, months: list[date]) -> list[StepResult]:
    """Replace each month in `sales` and `monthly_sales`; re-running a month never duplicates.

    Store ids are checked against, and locations read from, the stores this command staged, if any.
    """
    stores = {"stores": source_table(cur, "stores")}
    if not table_exists(cur, stores["stores"]):
        raise DataError("table stores does not exist: run load-customers before load-sales")
    cur.execute(read_sql("sales_tables.sql"))
    results = []
    for month in months:
        path = sales_file(raw_dir, month)
        if not path.is_file():
            raise DataError(f"no sales file for {month:%Y-%m}: expected {path}")
        started = time.perf_counter()
        cur.execute(table_sql("tables/sales_staging.sql", table="sales_staging", month=month))
        rows = copy_csv(cur, path, "sales_staging")
        cur.execute(table_sql("unknown_stores.sql", sources=stores))
        unknown = [row[0] for row in cur.fetchall()]
        if unknown:
            line = find_line(path, store_idx=str(unknown[0]))
            raise DataError(
                f"{path}: line {line}, column store_idx: store {unknown[0]} is not in stores.csv"
                + (f" (unknown stores: {', '.join(map(str, unknown))})" if len(unknown) > 1 else "")
            )
        replaced: dict[date, tuple[int, int]] | None = getattr(cur, "replaced_months", None)
        if replaced is not None:  # for the data checks: how many rows the month had before
            cur.execute(read_sql("check_sales_month_rows.sql"), {"month": month})
            before = int(fetch_one(cur)[0])
            replaced[month] = (replaced.get(month, (before, 0))[0], rows)
        cur.execute(table_sql("replace_sales_month.sql", sources=stores), {"month": month})
        cur.execute("DROP TABLE sales_staging")
        results.append(StepResult(f"load sales {month:%Y-%m}", rows, time.perf_counter() - started))
        results[-1].log()
    return results
