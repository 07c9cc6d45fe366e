"""`companydata-etl <stage>` (or `python -m data_engineering`): the command line, wired to the stages."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import psycopg2
from psycopg2.extensions import cursor as PgCursor

from data_engineering import DatabaseBusy, DataError
from data_engineering.checks import check_tables, enforce
from data_engineering.config import EtlSettings
from data_engineering.db import etl_transaction, table_exists
from data_engineering.features import build_features
from data_engineering.generate import GeneratorConfig, generate
from data_engineering.load import CUSTOMER_TABLES, available_months, load_customers, load_sales, loaded_months
from machine_learning_engineering.cli import run as run_cli
from machine_learning_engineering.cli import setup_logging
from machine_learning_engineering.config import ConfigError

log = logging.getLogger("data_engineering")

# Other sessions held the locks the ETL needs; retry later.
EX_TEMPFAIL = DatabaseBusy.exit_code


def month_arg(text: str) -> date:
    match = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if not match or not 1 <= int(match[2]) <= 12:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month in the form YYYY-MM")
    return date(int(match[1]), int(match[2]), 1)


def previous_month(today: date) -> date:
    return date(today.year - 1, 12, 1) if today.month == 1 else date(today.year, today.month - 1, 1)


def newest_month(raw_dir: Path) -> date:
    """`load-sales`' default month: the newest month folder in the raw files, never the clock, so
    that a re-run on the same files loads the same month and publishes the same tables."""
    months = available_months(raw_dir)
    if not months:
        raise DataError(f"no sales months found under {raw_dir / 'sales'} (expected folders YYYY-MM-01/sales.csv)")
    return months[-1]


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def ensure_raw_data(raw_dir: Path) -> None:
    """An empty raw directory gets the default generated dataset, so a first run just works."""
    if raw_dir.is_dir() and any(raw_dir.iterdir()):
        return
    log.info("%s is empty: generating the default dataset there first", raw_dir)
    try:
        generate(raw_dir)
    except OSError as exc:  # read-only mount, a file in the way, a full disk
        raise DataError(f"cannot generate the default dataset in {raw_dir}: {exc.strerror}: {exc.filename}") from None


def _sales_months(cur: PgCursor, raw_dir: Path, args: argparse.Namespace) -> list[date]:
    if not getattr(args, "all", True):
        return [args.month or newest_month(raw_dir)]
    newest_month(raw_dir)  # refuses an empty sales folder
    months = available_months(raw_dir)
    done = set() if args.force else loaded_months(cur)
    if done & set(months):
        log.info("skipping %d month(s) already loaded (use --force to reload them)", len(done & set(months)))
    return [m for m in months if m not in done]


def run(args: argparse.Namespace, settings: EtlSettings) -> None:
    if args.command == "generate":
        generate(args.out, GeneratorConfig(args.customers, args.months, args.seed, args.missing_rate), truth=args.truth)
        return
    raw_dir = args.raw_dir or settings.raw_data_dir
    if args.command in ("load-customers", "load-sales", "etl"):
        ensure_raw_data(raw_dir)
    checks = settings.checks
    if args.accept_drop:
        checks = dataclasses.replace(checks, accept_drop=True)
        log.warning(
            "--accept-drop: tables may be published with more than %.0f%% fewer rows than now (ETL_MAX_DROP_SHARE);"
            " every accepted drop is logged below",
            checks.max_drop_share * 100,
        )
    with etl_transaction(settings.database, settings.locks) as cur:
        published: list[str] = []
        if args.command in ("load-customers", "etl"):
            load_customers(cur, raw_dir)
            published += CUSTOMER_TABLES
        if args.command in ("load-sales", "etl"):
            load_sales(cur, raw_dir, _sales_months(cur, raw_dir, args))
        if args.command in ("load-customers", "load-sales", "etl"):
            # New stores can orphan loaded sales; load-customers renames stores in monthly_sales.
            published += [t for t in ("sales", "monthly_sales") if table_exists(cur, t)]
        if args.command in ("build-features", "etl"):
            build_features(cur)
            published.append("feature_store")
        # Before the staged tables are swapped in: a failed check rolls the whole command back.
        enforce(check_tables(cur, published, checks, raw_dir))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="companydata-etl",
        description="ETLs of the companydata database.",
        epilog="exit status: 0 done; 1 error (nothing was changed); 2 usage error; "
        "a failed data check is an error too; "
        f"{EX_TEMPFAIL} other sessions held the tables too long (nothing was changed; retry later)",
    )
    p.add_argument("--raw-dir", type=Path, help="raw files (default: $RAW_DATA_DIR or data/raw)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")

    gen = sub.add_parser("generate", help="write a seeded synthetic dataset in the raw layout")
    gen.add_argument("--out", type=Path, required=True, help="directory to write the files into")
    gen.add_argument("--customers", type=positive_int, default=GeneratorConfig.customers)
    gen.add_argument("--months", type=positive_int, default=GeneratorConfig.months, help="sales months from 2020-01")
    gen.add_argument("--seed", type=int, default=GeneratorConfig.seed)
    gen.add_argument("--truth", type=Path, help="also write each client's true P(label = 1) to this CSV")
    gen.add_argument(
        "--missing-rate", type=float, default=0.0, help="share of attr_a and attr_b cells left empty (default 0)"
    )

    accept = argparse.ArgumentParser(add_help=False)
    accept.add_argument(
        "--accept-drop",
        action="store_true",
        help="publish even if a table loses more rows than ETL_MAX_DROP_SHARE (a deliberate drop; logged)",
    )

    sub.add_parser("load-customers", parents=[accept], help="replace the customer tables from the customer files")

    sales = sub.add_parser("load-sales", parents=[accept], help="load a month of sales and aggregate monthly_sales")
    which = sales.add_mutually_exclusive_group()
    which.add_argument("--month", type=month_arg, help="YYYY-MM (default: the newest month in the raw files)")
    which.add_argument("--all", action="store_true", help="backfill every month present in the source")
    sales.add_argument("--force", action="store_true", help="with --all: reload months already loaded")

    sub.add_parser("build-features", parents=[accept], help="rebuild feature_store from the customer tables")

    etl = sub.add_parser(
        "etl", parents=[accept], help="load-customers, load-sales --all, build-features, in one transaction"
    )
    etl.add_argument("--force", action="store_true", help="reload sales months already loaded")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    try:
        run(args, EtlSettings.from_env())
    except DatabaseBusy as exc:  # the message says nothing was changed, and to retry later
        log.error("%s", exc)
        return EX_TEMPFAIL
    except (DataError, ConfigError) as exc:
        log.error("%s", exc)
        log.error("nothing was changed in the database")
        return 1
    except psycopg2.OperationalError as exc:
        log.error("cannot reach the database: %s", str(exc).strip())
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; nothing was changed in the database")
        return 130
    return 0


entry = run_cli(main)
