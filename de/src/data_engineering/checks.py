"""Data checks that refuse to publish bad data.

A command runs `check_tables` on every table it is about to publish, inside its transaction and
before its staged tables are swapped in, and `enforce`s the results: a failed "error" check
raises DataCheckFailed, so the transaction rolls back and the published tables stay as they
were; a failed "warn" check is logged. The checks read what the transaction is about to publish
(the staged table when the command staged one, else the table itself) and compare it, where a
check needs to, with what is published now.

    with etl_transaction(settings.database, settings.locks) as cur:
        load_customers(cur, raw_dir)
        enforce(check_tables(cur, CUSTOMER_TABLES, settings.checks, raw_dir))

Every check is named "<table>.<check>" (CHECK_NAMES lists them per table); the SQL is in
sql/check_*.sql, the value ranges this package owns in sql/check_value_ranges_<table>.sql.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from psycopg2 import sql
from psycopg2.extensions import cursor as PgCursor

from data_engineering import DataError
from data_engineering.config import CheckSettings
from data_engineering.db import read_sql, source_table, table_exists
from data_engineering.load import available_months
from machine_learning_engineering.db import fetch_one

__all__ = [
    "CHECK_NAMES",
    "CONTRACTS",
    "PUBLISHED_TABLES",
    "CheckResult",
    "CheckSettings",
    "DataCheckFailed",
    "Severity",
    "TableContract",
    "check_tables",
    "enforce",
]

log = logging.getLogger(__name__)

Severity = Literal["error", "warn"]


@dataclass(frozen=True)
class CheckResult:
    name: str  # stable id, e.g. "feature_store.row_count_drop"
    table: str  # the published table it guards
    severity: Severity  # "error" blocks publishing (and downstream); "warn" is reported only
    passed: bool
    message: str  # names the check, the source file (when there is one), the counts and what to do
    counts: dict[str, float]
    source: str | None = None  # the raw file it came from, when there is one


@dataclass(frozen=True)
class TableContract:
    """What a published table must look like: its columns (PostgreSQL's format_type), its key,
    the raw file it is loaded from (relative to RAW_DATA_DIR), the checks peculiar to it, and
    the columns where NULL is a value (not judged by null_share)."""

    columns: Mapping[str, str]
    key: tuple[str, ...]
    source: str | None
    extra_checks: tuple[str, ...] = ()
    null_is_a_value: tuple[str, ...] = ()


CONTRACTS: dict[str, TableContract] = {
    "customer_profiles": TableContract(
        {"idx": "integer", "attr_a": "integer", "attr_b": "text", "attr_c": "text"},
        ("idx",),
        "customer_profiles.csv",
    ),
    "customer_activity": TableContract(
        {"idx": "integer", "valid_from": "date", "valid_to": "date", "scd_a": "double precision", "scd_b": "integer"},
        ("idx", "valid_from"),
        "customer_activity.csv",
        null_is_a_value=("valid_to",),  # the client's current row
    ),
    "labels": TableContract({"idx": "integer", "label": "smallint"}, ("idx",), "labels.csv", ("label_balance",)),
    "stores": TableContract({"idx": "integer", "location": "text"}, ("idx",), "stores.csv"),
    "sales": TableContract(
        {"sale_month": "date", "idx": "integer", "value": "numeric", "date": "date", "store_idx": "integer"},
        ("sale_month", "idx"),
        "sales",
        ("store_exists", "freshness"),
    ),
    "monthly_sales": TableContract(
        {"store_idx": "integer", "location": "text", "sale_month": "date", "value": "numeric"},
        ("sale_month", "store_idx"),
        None,
        ("matches_sales",),
    ),
    "feature_store": TableContract(
        {
            "idx": "integer",
            "attr_a": "integer",
            "attr_b": "text",
            "scd_a": "double precision",
            "scd_b": "integer",
            "label": "smallint",
        },
        ("idx",),
        None,
        ("label_balance",),
    ),
}

PUBLISHED_TABLES = tuple(CONTRACTS)
_COMMON = (
    "columns",
    "not_empty",
    "unique_key",
    "key_not_null",
    "null_share",
    "value_ranges",
    "value_domain",
    "row_count_drop",
)
# monthly_sales is rebuilt month by month from sales: its size follows sales' (sales.row_count_drop).
CHECK_NAMES: dict[str, tuple[str, ...]] = {
    table: tuple(
        f"{table}.{check}"
        for check in (*_COMMON, *contract.extra_checks)
        if not (table == "monthly_sales" and check == "row_count_drop")
    )
    for table, contract in CONTRACTS.items()
}
# Value rules named "seen: ..." in sql/check_value_ranges_*.sql: the observed domain, not an invariant.
DOMAIN = "seen: "
SEVERITIES: dict[str, Severity] = {
    "null_share": "warn",
    "value_domain": "warn",
    "freshness": "warn",
}  # label_balance: warn or error


class DataCheckFailed(DataError):
    """One or more "error" checks failed: nothing was published. `results` holds every result."""

    def __init__(self, results: Sequence[CheckResult]) -> None:
        self.results = list(results)
        failed = [r for r in self.results if r.severity == "error" and not r.passed]
        lines = [f"{len(failed)} data check(s) failed; refusing to publish:"]
        for r in failed:
            counts = ", ".join(f"{k}={_number(v)}" for k, v in r.counts.items())
            lines.append(f"  {r.name} (file: {r.source or 'none'}; {counts or 'no counts'}): {r.message}")
        super().__init__("\n".join(lines))


def enforce(results: Sequence[CheckResult]) -> None:
    """Log every warn failure as WARNING; raise DataCheckFailed if any error check failed."""
    for r in results:
        if r.severity == "warn" and not r.passed:
            log.warning("%s", r.message)
        elif r.passed:
            log.debug("%s", r.message)
    if any(r.severity == "error" and not r.passed for r in results):
        raise DataCheckFailed(results)
    warnings = sum(not r.passed for r in results)
    log.info("data checks: %d passed, %d warning(s)", len(results) - warnings, warnings)


def check_tables(
    cur: PgCursor, tables: Sequence[str], settings: CheckSettings, raw_dir: Path | None = None
) -> list[CheckResult]:
    """Run every check for the given published-table names against what this transaction is about to
    publish (the staged table when the cursor staged one -- see db.stage/source_table -- else the table itself),
    comparing with the currently published table where a check needs it (row-count drop)."""
    unknown = [t for t in tables if t not in CONTRACTS]
    if unknown:
        raise ValueError(f"no data checks for table(s) {', '.join(unknown)}; known: {', '.join(CONTRACTS)}")
    results: list[CheckResult] = []
    for table in tables:
        results.extend(_Checker(cur, table, settings, raw_dir).run())
    return results


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{int(value):,}"


def _share(value: float) -> str:
    return f"{value:.1%}"


def _months_between(earlier: date, later: date) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month


class _Checker:
    """The checks of one table; each method returns one result."""

    def __init__(self, cur: PgCursor, table: str, settings: CheckSettings, raw_dir: Path | None) -> None:
        self.cur, self.table, self.settings, self.raw_dir = cur, table, settings, raw_dir
        self.contract = CONTRACTS[table]
        self.target = source_table(cur, table)  # what this transaction is about to publish
        self.source = str(raw_dir / self.contract.source) if raw_dir and self.contract.source else None
        self.rows = 0

    def result(
        self,
        check: str,
        passed: bool,
        message: str,
        counts: Mapping[str, float],
        severity: Severity | None = None,
        source: str | None = None,
    ) -> CheckResult:
        severity = severity or SEVERITIES.get(check, "error")
        source = source or self.source
        name = f"{self.table}.{check}"
        where = f" ({source})" if source else ""
        verdict = "ok" if passed else "FAILED" if severity == "error" else "WARNING"
        return CheckResult(
            name=name,
            table=self.table,
            severity=severity,
            passed=passed,
            message=f"{name} {verdict}{where}: {message}",
            counts=dict(counts),
            source=source,
        )

    def query(self, name: str, params: Mapping[str, object] | None = None, **identifiers: sql.Composable) -> None:
        text = sql.SQL(read_sql(name)).format(table=sql.Identifier(self.target), **identifiers)
        self.cur.execute(text, params)

    def run(self) -> list[CheckResult]:
        columns = self.columns()
        if not columns.passed:  # the other checks' SQL needs the contracted columns
            return [columns]
        results = [columns, self.not_empty(), self.unique_key(), *self.nulls(), *self.value_ranges()]
        if self.table != "monthly_sales":
            results.append(self.row_count_drop())
        for check in self.contract.extra_checks:
            results.append(getattr(self, check)())
        return results

    # --- every table -------------------------------------------------------------------------

    def columns(self) -> CheckResult:
        expected = dict(self.contract.columns)
        if not table_exists(self.cur, self.target):
            return self.result(
                "columns",
                False,
                f"table {self.table} does not exist; run the ETL stage that builds it",
                {"missing_columns": len(expected)},
            )
        self.query("check_columns.sql", {"table": f"public.{self.target}"})
        found = dict(self.cur.fetchall())
        missing = [c for c in expected if c not in found]
        wrong = [f"{c} is {found[c]}, expected {t}" for c, t in expected.items() if c in found and found[c] != t]
        counts = {"missing_columns": len(missing), "wrong_types": len(wrong), "columns": len(found)}
        if missing or wrong:
            problems = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + wrong
            return self.result(
                "columns", False, f"{'; '.join(problems)}; rebuild the table with the current ETL", counts
            )
        return self.result("columns", True, f"{len(expected)} required columns with their types", counts)

    def not_empty(self) -> CheckResult:
        self.query("check_row_count.sql")
        self.rows = int(fetch_one(self.cur)[0])
        if self.rows == 0:
            return self.result(
                "not_empty",
                False,
                f"{self.table} would be published with 0 rows (header only?); check the file",
                {"rows": 0},
            )
        return self.result("not_empty", True, f"{self.rows:,} rows", {"rows": self.rows})

    def unique_key(self) -> CheckResult:
        key = sql.SQL(", ").join(map(sql.Identifier, self.contract.key))
        self.query("check_duplicate_keys.sql", key=key)
        extra, repeated = fetch_one(self.cur)
        counts = {"duplicate_rows": int(extra), "repeated_keys": int(repeated), "rows": self.rows}
        key_text = f"({', '.join(self.contract.key)})"
        if extra:
            return self.result(
                "unique_key",
                False,
                f"{int(repeated):,} value(s) of the key {key_text} repeat ({int(extra):,} extra rows); "
                "remove the duplicates from the file",
                counts,
            )
        return self.result("unique_key", True, f"key {key_text} is unique", counts)

    def nulls(self) -> list[CheckResult]:
        columns = list(self.contract.columns)
        non_null = sql.SQL(", ").join(
            sql.SQL("count({}) AS {}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns
        )
        self.query("check_profile.sql", non_null_counts=non_null)
        row = fetch_one(self.cur)
        rows = int(row[0])
        nulls = {c: rows - int(n) for c, n in zip(columns, row[1:], strict=True)}
        key_nulls = {c: nulls[c] for c in self.contract.key if nulls[c]}
        key_counts: dict[str, float] = {f"{c}_nulls": nulls[c] for c in self.contract.key}
        if key_nulls:
            described = ", ".join(f"{c}: {n:,}" for c, n in key_nulls.items())
            key_result = self.result(
                "key_not_null", False, f"empty key value(s) ({described}); every row needs its key", key_counts
            )
        else:
            key_result = self.result("key_not_null", True, "no empty key values", key_counts)
        limit = self.settings.max_null_share
        judged = [c for c in columns if c not in self.contract.key + self.contract.null_is_a_value]
        shares = {c: (nulls[c] / rows if rows else 0.0) for c in judged}
        high = {c: s for c, s in shares.items() if s > limit}
        counts: dict[str, float] = {"rows": rows, "max_null_share": limit}
        counts.update({f"{c}_null_share": round(s, 6) for c, s in shares.items()})
        if high:
            described = ", ".join(f"{c} {_share(s)}" for c, s in high.items())
            share_result = self.result(
                "null_share",
                False,
                f"column(s) mostly empty: {described} (above ETL_MAX_NULL_SHARE {_share(limit)}); "
                "check the export that made the file",
                counts,
            )
        else:
            share_result = self.result(
                "null_share", True, f"no column more than {_share(limit)} empty (ETL_MAX_NULL_SHARE)", counts
            )
        return [key_result, share_result]

    def value_ranges(self) -> list[CheckResult]:
        """Invariants (value_ranges, an error) and the domain seen so far (value_domain, a warning:
        a new category or a wider range in real data is worth a look, not a refusal)."""
        self.query(f"check_value_ranges_{self.table}.sql")
        assert self.cur.description is not None
        rules = [column.name for column in self.cur.description]
        broken = {rule: int(n) for rule, n in zip(rules, fetch_one(self.cur), strict=True)}
        results = []
        for check, domain in (("value_ranges", False), ("value_domain", True)):
            mine = {rule.removeprefix(DOMAIN): n for rule, n in broken.items() if rule.startswith(DOMAIN) == domain}
            counts: dict[str, float] = {f"out_of_range[{rule}]": n for rule, n in mine.items()}
            bad = {rule: n for rule, n in mine.items() if n}
            if bad:
                described = "; ".join(f"{n:,} row(s) break {rule!r}" for rule, n in bad.items())
                advice = "check the source: new values are loaded" if domain else "fix the values in the file"
                results.append(self.result(check, False, f"{described}; {advice}", counts))
            else:
                within = ", ".join(mine) or "no rules"
                results.append(self.result(check, True, f"every value within range ({within})", counts))
        return results

    def row_count_drop(self) -> CheckResult:
        limit = self.settings.max_drop_share
        if self.table == "sales":
            return self._sales_month_drop(limit)
        if self.target == self.table or not table_exists(self.cur, self.table):
            return self.result(
                "row_count_drop",
                True,
                "nothing published yet to compare with" if self.target != self.table else "not replaced by this run",
                {"staged_rows": self.rows},
            )
        self.cur.execute(sql.SQL(read_sql("check_row_count.sql")).format(table=sql.Identifier(self.table)))
        published = int(fetch_one(self.cur)[0])
        return self._drop_result(published, self.rows, limit, f"{self.table}")

    def _sales_month_drop(self, limit: float) -> CheckResult:
        replaced: dict[date, tuple[int, int]] = getattr(self.cur, "replaced_months", {})
        worst: tuple[float, date, int, int] | None = None
        for month, (published, staged) in sorted(replaced.items()):
            share = (published - staged) / published if published else 0.0
            if worst is None or share > worst[0]:
                worst = (share, month, published, staged)
        if worst is None or worst[2] == 0:
            return self.result(
                "row_count_drop", True, "no published month replaced by this run", {"months_replaced": len(replaced)}
            )
        _, month, published, staged = worst
        source = str(self.raw_dir / "sales" / f"{month:%Y-%m}-01" / "sales.csv") if self.raw_dir else None
        return self._drop_result(published, staged, limit, f"sales month {month:%Y-%m}", source=source)

    def _drop_result(
        self, published: int, staged: int, limit: float, what: str, source: str | None = None
    ) -> CheckResult:
        share = (published - staged) / published if published else 0.0
        counts = {
            "staged_rows": staged,
            "published_rows": published,
            "drop_share": round(share, 6),
            "max_drop_share": limit,
        }
        if share <= limit:
            return self.result(
                "row_count_drop", True, f"{what}: {published:,} published rows -> {staged:,}", counts, source=source
            )
        change = f"{what} would shrink from {published:,} published rows to {staged:,} (drop {_share(share)})"
        if self.settings.accept_drop:
            return self.result(
                "row_count_drop",
                False,
                f"{change}, above ETL_MAX_DROP_SHARE {_share(limit)}: ACCEPTED by --accept-drop",
                {**counts, "accepted": 1},
                severity="warn",
                source=source,
            )
        return self.result(
            "row_count_drop",
            False,
            f"{change}, above ETL_MAX_DROP_SHARE {_share(limit)}; check the file, "
            "or rerun with --accept-drop if the drop is deliberate",
            counts,
            source=source,
        )

    # --- checks peculiar to some tables -----------------------------------------------------------

    def label_balance(self) -> CheckResult:
        self.query("check_label_balance.sql")
        zeros, ones = (int(n) for n in fetch_one(self.cur))
        total = zeros + ones
        minority = min(zeros, ones) / total if total else 0.0
        limit = self.settings.min_label_share
        counts = {"label_0": zeros, "label_1": ones, "minority_share": round(minority, 6), "min_label_share": limit}
        if total and (zeros == 0 or ones == 0):
            only = 0 if ones == 0 else 1
            return self.result(
                "label_balance",
                False,
                f"every one of {total:,} labels is {only}: a model cannot learn from one class; check the file",
                counts,
                severity="error",
            )
        if minority < limit:
            return self.result(
                "label_balance",
                False,
                f"the rarer label is only {_share(minority)} of {total:,} rows "
                f"(below ETL_MIN_LABEL_SHARE {_share(limit)}); check the file",
                counts,
                severity="warn",
            )
        positive = _share(ones / total if total else 0.0)
        return self.result("label_balance", True, f"labels 0: {zeros:,}, 1: {ones:,} ({positive} positive)", counts)

    def store_exists(self) -> CheckResult:
        stores = source_table(self.cur, "stores")
        if not table_exists(self.cur, stores):
            return self.result("store_exists", False, "table stores does not exist; run load-customers", {})
        self.query("check_unknown_sale_stores.sql", sales=sql.Identifier(self.target), stores=sql.Identifier(stores))
        rows, count, examples = fetch_one(self.cur)
        counts = {"unknown_store_rows": int(rows), "unknown_stores": int(count)}
        stores_file = str(self.raw_dir / "stores.csv") if self.raw_dir else None
        if rows:
            return self.result(
                "store_exists",
                False,
                f"{int(rows):,} sale(s) name {int(count)} store(s) not in stores "
                f"({', '.join(map(str, examples))}); add them to stores.csv or fix the sales files",
                counts,
                source=stores_file or self.source,
            )
        return self.result("store_exists", True, "every sale's store is in stores", counts)

    def freshness(self) -> CheckResult:
        self.query("check_newest_sales_month.sql")
        newest: date | None = fetch_one(self.cur)[0]
        limit = self.settings.max_sales_age_months
        if self.settings.as_of is not None:
            reference: date | None = self.settings.as_of.replace(day=1)
            basis = f"ETL_AS_OF {self.settings.as_of}"
        else:
            months = available_months(self.raw_dir) if self.raw_dir else []
            reference = months[-1] if months else None
            basis = "the newest month in the raw files"
        if newest is None or reference is None:
            return self.result(
                "freshness", True, "no newest month or no reference month to compare", {"max_age_months": limit}
            )
        age = _months_between(newest, reference)
        counts = {"age_months": age, "max_age_months": limit}
        text = f"newest sales month {newest:%Y-%m} is {age} month(s) behind {basis} ({reference:%Y-%m})"
        if age > limit:
            return self.result(
                "freshness",
                False,
                f"{text}, more than ETL_MAX_SALES_AGE_MONTHS {limit}; run load-sales --all",
                counts,
            )
        return self.result("freshness", True, text, counts)

    def matches_sales(self) -> CheckResult:
        sales, stores = source_table(self.cur, "sales"), source_table(self.cur, "stores")
        if not (table_exists(self.cur, sales) and table_exists(self.cur, stores)):
            return self.result("matches_sales", False, "tables sales and stores must exist; run the ETL", {})
        self.query(
            "check_monthly_sales_mismatch.sql",
            sales=sql.Identifier(sales),
            stores=sql.Identifier(stores),
            monthly_sales=sql.Identifier(self.target),
        )
        missing, extra, location, value, first = fetch_one(self.cur)
        counts = {
            "missing_rows": int(missing),
            "extra_rows": int(extra),
            "wrong_location": int(location),
            "wrong_value": int(value),
        }
        if any(counts.values()):
            return self.result(
                "matches_sales",
                False,
                f"monthly_sales disagrees with sales and stores from {first:%Y-%m} on "
                f"({', '.join(f'{k} {v:,}' for k, v in counts.items() if v)}); "
                "rerun load-sales --all --force",
                counts,
            )
        return self.result("matches_sales", True, "monthly_sales equals sales summed per month and store", counts)
