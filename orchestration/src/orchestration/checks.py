"""The ETL's data checks (data_engineering.checks) as Dagster asset checks.

data_engineering decides what is checked and how; this module only declares each check on the
asset of the table it guards and reports its results. A check named `<table>.<check>` there is
the check `<check>` of asset `<table>` here (Dagster names allow no dot). Checks that can fail
with severity "error" are blocking: when one fails, the asset's transaction is rolled back (the
published tables stay as they were; the materialization says "published": False) and Dagster
runs nothing downstream of it.

`run_checked` is the one way an ETL asset runs its stage: inside `etl_transaction`, the checks
on what is about to be published, `enforce` before the swap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MaterializeResult

from data_engineering.checks import CHECK_NAMES, SEVERITIES, CheckResult, DataCheckFailed, check_tables, enforce
from data_engineering.config import EtlSettings
from data_engineering.db import EtlCursor, etl_transaction
from data_engineering.load import StepResult

# data_engineering.checks severities -> Dagster's.
_SEVERITY = {"error": AssetCheckSeverity.ERROR, "warn": AssetCheckSeverity.WARN}


def check_name(result_name: str) -> str:
    """`feature_store.row_count_drop` -> `row_count_drop` (the check of asset feature_store)."""
    return result_name.split(".", 1)[1]


def blocking(result_name: str) -> bool:
    """Whether the check can fail with severity "error" (all but the warn-only ones)."""
    return SEVERITIES.get(check_name(result_name)) != "warn"


def check_specs(tables: Sequence[str]) -> list[AssetCheckSpec]:
    """One AssetCheckSpec per data check of each table, on the table's asset."""
    return [
        AssetCheckSpec(
            check_name(name),
            asset=AssetKey(table),
            blocking=blocking(name),
            description=f"data_engineering.checks {name}"
            + (" (blocks publishing)" if blocking(name) else " (warning)"),
        )
        for table in tables
        for name in CHECK_NAMES[table]
    ]


def to_dagster(result: CheckResult) -> AssetCheckResult:
    metadata: dict[str, Any] = {**result.counts, "message": result.message, "check": result.name}
    if result.source:
        metadata["source"] = result.source
    return AssetCheckResult(
        asset_key=AssetKey(result.table),
        check_name=check_name(result.name),
        passed=result.passed,
        severity=_SEVERITY[result.severity],
        metadata=metadata,
    )


@dataclass
class Checked:
    """What a checked stage did: published or rolled back, with every check result."""

    published: bool
    results: list[CheckResult]
    steps: list[StepResult] = field(default_factory=list)

    def failed(self, table: str | None = None) -> list[str]:
        return [
            r.name
            for r in self.results
            if r.severity == "error" and not r.passed and (table is None or r.table == table)
        ]

    def materializations(
        self, tables: Sequence[str], metadata: Mapping[str, Mapping[str, Any]] | None = None
    ) -> Iterator[MaterializeResult[None]]:
        """One MaterializeResult per table's asset, carrying that table's check results."""
        for table in tables:
            extra = dict((metadata or {}).get(table, {}))
            extra["published"] = self.published
            if not self.published:
                extra["failed_checks"] = ", ".join(self.failed())
            yield MaterializeResult(
                asset_key=AssetKey(table),
                metadata=extra,
                check_results=[to_dagster(r) for r in self.results if r.table == table],
            )


def run_checked(
    settings: EtlSettings, tables: Sequence[str], stage: Callable[[EtlCursor], list[StepResult]]
) -> Checked:
    """Run `stage` in one ETL transaction, check `tables` as they are about to be published and
    publish only if no error check failed (else roll back: the published tables are unchanged)."""
    try:
        with etl_transaction(settings.database, settings.locks) as cur:
            steps = stage(cur)
            results = check_tables(cur, tables, settings.checks, settings.raw_data_dir)
            enforce(results)  # DataCheckFailed: etl_transaction rolls back
    except DataCheckFailed as exc:
        return Checked(False, exc.results)
    return Checked(True, results, steps)
