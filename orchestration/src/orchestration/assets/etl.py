"""The ETL's tables as assets. Each asset calls the stages `companydata-etl` calls
(data_engineering.cli.run): in one `etl_transaction`, checked before it publishes
(orchestration.checks.run_checked).

- `customer_tables`: stores, customer_profiles, customer_activity, labels (load_customers);
- `sales`: sales and monthly_sales, one partition per month of the source from 2020-01
  (load_sales for those months: a re-run replaces its months, never duplicates);
- `feature_store` (build_features).

Every ETL asset takes the concurrency pool `companydata_etl` (the ETL's own run lock would
serialise them anyway; the pool keeps them from queueing inside the database).
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

from collections.abc import Iterator
from datetime import date
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MonthlyPartitionsDefinition,
    multi_asset,
)

from data_engineering.cli import ensure_raw_data
from data_engineering.features import build_features
from data_engineering.load import CUSTOMER_TABLES, StepResult, load_customers, load_sales
from orchestration.checks import Checked, check_specs, run_checked
from orchestration.resources import DB_RETRY, EtlResource, transient_only

GROUP = "etl"
POOL = "companydata_etl"
SALES_TABLES = ("sales", "monthly_sales")
FEATURE_TABLES = ("feature_store",)
# The first month of the source (GeneratorConfig: 2020-01 onwards); the newest partition is the
# last complete month.
MONTHLY = MonthlyPartitionsDefinition(start_date="2020-01-01")


def _rows(steps: list[StepResult], prefix: str) -> dict[str, Any]:
    """Rows loaded and seconds taken by the steps whose name starts with `prefix`."""
    chosen = [s for s in steps if s.step.startswith(prefix)]
    return {"rows_loaded": sum(s.rows for s in chosen), "seconds": round(sum(s.seconds for s in chosen), 3)}


def _log(context: AssetExecutionContext, checked: Checked) -> None:
    if checked.published:
        context.log.info("published after %d data checks", len(checked.results))
    else:
        context.log.error("NOT published: data check(s) failed: %s", ", ".join(checked.failed()))
    for result in checked.results:
        if not result.passed:
            (context.log.error if result.severity == "error" else context.log.warning)(result.message)


@multi_asset(
    name="customer_tables",
    specs=[AssetSpec(table, group_name=GROUP, description=f"{table}.csv, loaded as is") for table in CUSTOMER_TABLES],
    check_specs=check_specs(CUSTOMER_TABLES),
    retry_policy=DB_RETRY,
    pool=POOL,
)
def customer_tables(context: AssetExecutionContext, etl: EtlResource) -> Iterator[MaterializeResult[None]]:
    settings = etl.settings()
    raw_dir = settings.raw_data_dir
    with transient_only():
        ensure_raw_data(raw_dir)
        checked = run_checked(settings, CUSTOMER_TABLES, lambda cur: load_customers(cur, raw_dir))
    _log(context, checked)
    yield from checked.materializations(
        CUSTOMER_TABLES,
        {t: {**_rows(checked.steps, f"load {t}"), "source": str(raw_dir / f"{t}.csv")} for t in CUSTOMER_TABLES},
    )


def months_of(context: AssetExecutionContext) -> list[date]:
    """The months this run loads: its partition, or every partition of a backfill's range."""
    return [date.fromisoformat(key) for key in context.partition_keys]


@multi_asset(
    name="sales",
    specs=[
        AssetSpec(
            "sales",
            group_name=GROUP,
            deps=[AssetKey("stores")],
            partitions_def=MONTHLY,
            description="sales/YYYY-MM-01/sales.csv, one partition per month",
        ),
        AssetSpec(
            "monthly_sales",
            group_name=GROUP,
            deps=[AssetKey("sales"), AssetKey("stores")],
            partitions_def=MONTHLY,
            description="sales summed per store and month (with the store's location)",
        ),
    ],
    check_specs=check_specs(SALES_TABLES),
    partitions_def=MONTHLY,
    # A backfill of a range of months is one run and one transaction (all months land or none);
    # a month loaded again replaces its rows, so a backfill may be re-run at will.
    backfill_policy=BackfillPolicy.single_run(),
    retry_policy=DB_RETRY,
    pool=POOL,
)
def sales(context: AssetExecutionContext, etl: EtlResource) -> Iterator[MaterializeResult[None]]:
    settings = etl.settings()
    months = months_of(context)
    with transient_only():
        ensure_raw_data(settings.raw_data_dir)
        checked = run_checked(settings, SALES_TABLES, lambda cur: load_sales(cur, settings.raw_data_dir, months))
    _log(context, checked)
    span = {"months": ", ".join(f"{m:%Y-%m}" for m in months)}
    yield from checked.materializations(
        SALES_TABLES, {"sales": {**_rows(checked.steps, "load sales"), **span}, "monthly_sales": span}
    )


@multi_asset(
    name="feature_store",
    specs=[
        AssetSpec(
            "feature_store",
            group_name=GROUP,
            deps=[AssetKey("customer_profiles"), AssetKey("customer_activity"), AssetKey("labels")],
            description="one row per client: profile, current activity, label (built in SQL)",
        )
    ],
    check_specs=check_specs(FEATURE_TABLES),
    retry_policy=DB_RETRY,
    pool=POOL,
)
def feature_store(context: AssetExecutionContext, etl: EtlResource) -> Iterator[MaterializeResult[None]]:
    settings = etl.settings()
    with transient_only():
        checked = run_checked(settings, FEATURE_TABLES, lambda cur: [build_features(cur)])
    _log(context, checked)
    yield from checked.materializations(FEATURE_TABLES, {"feature_store": _rows(checked.steps, "build")})
