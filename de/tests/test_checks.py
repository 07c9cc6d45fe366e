"""Data checks (issue 13): bad data is refused before it is published, for real against PostgreSQL."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from data_engineering.checks import (
    CHECK_NAMES,
    PUBLISHED_TABLES,
    CheckResult,
    CheckSettings,
    DataCheckFailed,
    check_tables,
    enforce,
)
from data_engineering.config import EtlSettings
from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import CUSTOMER_TABLES, load_customers, load_sales
from testkit.fixtures import TestDatabase, append_line

DE = Path(__file__).resolve().parents[1]


def etl(db: TestDatabase, *args: str, raw_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "data_engineering", *args],
        capture_output=True,
        text=True,
        env=db.env(RAW_DATA_DIR=str(raw_dir), **env),
        timeout=300,
    )


def digests(db: TestDatabase) -> dict[str, str]:
    return {t: db.digest(t) for t in sorted(db.created_tables())}


def loaded(db: TestDatabase, raw_dir: Path) -> dict[str, str]:
    """A full, successful `etl`, and the digests of what it published."""
    result = etl(db, "etl", raw_dir=raw_dir)
    assert result.returncode == 0, result.stderr
    return digests(db)


def refused(db: TestDatabase, raw_dir: Path, *args: str) -> str:
    result = etl(db, *args, raw_dir=raw_dir)
    assert result.returncode == 1, result.stderr
    assert "nothing was changed in the database" in result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def keep_lines(path: Path, count: int) -> None:
    """Keep the header and the first `count` rows of a CSV file."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: count + 1]))


# --- the four refusals of the issue ------------------------------------------------------------


def test_a_header_only_customer_profiles_file_is_refused_and_changes_nothing(companydata, raw_dir) -> None:
    before = loaded(companydata, raw_dir)
    keep_lines(raw_dir / "customer_profiles.csv", 0)
    stderr = refused(companydata, raw_dir, "etl", "--force")
    assert "customer_profiles.not_empty" in stderr and "customer_profiles.row_count_drop" in stderr
    assert "feature_store.not_empty" in stderr
    assert f"file: {raw_dir / 'customer_profiles.csv'}" in stderr
    assert "staged_rows=0, published_rows=500, drop_share=1" in stderr
    assert digests(companydata) == before


def test_a_header_only_file_is_refused_on_the_first_run_too(companydata, raw_dir) -> None:
    keep_lines(raw_dir / "customer_profiles.csv", 0)
    stderr = refused(companydata, raw_dir, "load-customers")
    assert "customer_profiles.not_empty FAILED" in stderr
    assert companydata.created_tables() == set()


def test_labels_cut_after_a_full_load_are_refused_naming_check_file_and_counts(companydata, raw_dir) -> None:
    before = loaded(companydata, raw_dir)
    keep_lines(raw_dir / "labels.csv", 7)  # 150,000 -> 2,000 in the issue; 500 -> 7 here
    for command in (["etl", "--force"], ["load-customers"]):
        stderr = refused(companydata, raw_dir, *command)
        assert "labels.row_count_drop FAILED" in stderr
        assert f"({raw_dir / 'labels.csv'})" in stderr
        assert "staged_rows=7, published_rows=500, drop_share=0.986" in stderr
        assert "--accept-drop" in stderr
        assert digests(companydata) == before


def test_a_sales_file_naming_an_unknown_store_is_refused(companydata, raw_dir) -> None:
    before = loaded(companydata, raw_dir)
    append_line(raw_dir / "sales" / "2020-02-01" / "sales.csv", "99999,1.5,2020-02-10,9")
    stderr = refused(companydata, raw_dir, "etl", "--force")
    assert "store 9 is not in stores.csv" in stderr
    assert digests(companydata) == before


def test_stores_that_orphan_loaded_sales_are_refused_by_the_referential_check(companydata, raw_dir) -> None:
    before = loaded(companydata, raw_dir)
    stores = raw_dir / "stores.csv"
    stores.write_text("".join(line for line in stores.read_text().splitlines(keepends=True) if line[0] != "5"))
    stderr = refused(companydata, raw_dir, "load-customers")
    assert "sales.store_exists FAILED" in stderr and "(5)" in stderr
    assert f"file: {stores}" in stderr
    assert digests(companydata) == before


def test_label_values_outside_0_and_1_are_refused(companydata, raw_dir) -> None:
    before = loaded(companydata, raw_dir)
    append_line(raw_dir / "labels.csv", "100000,2")
    stderr = refused(companydata, raw_dir, "etl", "--force")
    assert "labels.csv" in stderr and "label_is_0_or_1" in stderr
    assert digests(companydata) == before


def test_the_value_range_check_refuses_labels_outside_0_and_1_even_past_the_table_constraint(
    companydata, raw_dir
) -> None:
    before = loaded(companydata, raw_dir)
    with pytest.raises(DataCheckFailed) as raised, etl_transaction(companydata.settings("etl")) as cur:
        load_customers(cur, raw_dir)
        cur.execute("ALTER TABLE labels__new DROP CONSTRAINT label_is_0_or_1")
        cur.execute("UPDATE labels__new SET label = 2 WHERE idx < 3")
        enforce(check_tables(cur, ["labels"], CheckSettings(), raw_dir))
    failed = [r for r in raised.value.results if not r.passed]
    assert [r.name for r in failed] == ["labels.value_ranges"]
    assert failed[0].counts["out_of_range[label in 0, 1]"] == 3
    assert failed[0].source == str(raw_dir / "labels.csv")
    assert "labels.value_ranges (file:" in str(raised.value)
    assert digests(companydata) == before


# --- row-count drops and --accept-drop ---------------------------------------------------------


def test_accept_drop_publishes_a_deliberate_drop_and_says_so(companydata, raw_dir) -> None:
    loaded(companydata, raw_dir)
    keep_lines(raw_dir / "labels.csv", 400)  # a 20 % drop: above ETL_MAX_DROP_SHARE (10 %)
    refused(companydata, raw_dir, "etl", "--force")
    result = etl(companydata, "etl", "--force", "--accept-drop", raw_dir=raw_dir)
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "--accept-drop: tables may be published" in result.stderr
    assert "labels.row_count_drop WARNING" in result.stderr and "ACCEPTED by --accept-drop" in result.stderr
    assert companydata.query("SELECT count(*) FROM labels")[0][0] == 400
    assert companydata.query("SELECT count(*) FROM feature_store")[0][0] == 400


def test_a_drop_within_the_threshold_or_a_raised_threshold_is_published(companydata, raw_dir) -> None:
    loaded(companydata, raw_dir)
    keep_lines(raw_dir / "labels.csv", 460)  # 8 %
    assert etl(companydata, "load-customers", raw_dir=raw_dir).returncode == 0
    keep_lines(raw_dir / "labels.csv", 300)  # 35 %
    result = etl(companydata, "load-customers", raw_dir=raw_dir, ETL_MAX_DROP_SHARE="0.5")
    assert result.returncode == 0, result.stderr
    assert companydata.query("SELECT count(*) FROM labels")[0][0] == 300


def test_a_sales_month_that_shrinks_is_refused(companydata, raw_dir) -> None:
    before = loaded(companydata, raw_dir)
    keep_lines(raw_dir / "sales" / "2020-02-01" / "sales.csv", 10)
    stderr = refused(companydata, raw_dir, "load-sales", "--month", "2020-02")
    assert "sales.row_count_drop FAILED" in stderr and "sales month 2020-02" in stderr
    assert str(raw_dir / "sales" / "2020-02-01" / "sales.csv") in stderr
    assert digests(companydata) == before


# --- stores, monthly_sales and sales stay consistent ---------------------------------------------


def test_a_renamed_store_is_renamed_in_every_loaded_month_of_monthly_sales(companydata, raw_dir) -> None:
    loaded(companydata, raw_dir)
    stores = raw_dir / "stores.csv"
    stores.write_text(stores.read_text().replace("Lisbon", "Porto"))
    result = etl(companydata, "load-customers", raw_dir=raw_dir)
    assert result.returncode == 0, result.stderr
    assert companydata.query("SELECT DISTINCT location FROM monthly_sales WHERE store_idx = 2") == [("Porto",)]
    # The months already loaded are skipped by `etl`, and stay consistent all the same.
    result = etl(companydata, "etl", raw_dir=raw_dir)
    assert result.returncode == 0 and "skipping 3 month(s)" in result.stderr


def test_monthly_sales_that_disagree_with_sales_are_refused(companydata, raw_dir) -> None:
    loaded(companydata, raw_dir)
    with etl_transaction(companydata.settings("etl")) as cur:
        cur.execute("UPDATE monthly_sales SET value = value + 1 WHERE sale_month = '2020-02-01' AND store_idx = 1")
        cur.execute("UPDATE monthly_sales SET location = 'Atlantis' WHERE store_idx = 3")
        results = check_tables(cur, ["monthly_sales"], CheckSettings(), raw_dir)
        cur.connection.rollback()
    (result,) = [r for r in results if r.name == "monthly_sales.matches_sales"]
    assert not result.passed and result.severity == "error"
    assert result.counts["wrong_value"] == 1 and result.counts["wrong_location"] == 3
    assert "from 2020-01 on" in result.message and "load-sales --all --force" in result.message


# --- reproducibility ---------------------------------------------------------------------------------


def test_a_rerun_on_the_same_files_gives_identical_tables_from_scratch_and_in_place(companydata, raw_dir) -> None:
    first = loaded(companydata, raw_dir)
    assert etl(companydata, "etl", "--force", raw_dir=raw_dir).returncode == 0
    assert digests(companydata) == first
    companydata.reset()
    assert loaded(companydata, raw_dir) == first
    # load-sales without --month loads the newest month of the files, whatever the date.
    assert etl(companydata, "load-sales", raw_dir=raw_dir).returncode == 0
    assert digests(companydata) == first
    dump = "SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM {} AS t"
    texts = {t: companydata.query(dump.format(t))[0][0] for t in first}
    companydata.reset()
    loaded(companydata, raw_dir)
    assert {t: companydata.query(dump.format(t))[0][0] for t in first} == texts


# --- warnings -------------------------------------------------------------------------------------------


def test_one_label_class_is_an_error_and_a_rare_class_a_warning(companydata, raw_dir) -> None:
    labels = raw_dir / "labels.csv"
    frame = pd.read_csv(labels)
    frame.assign(label=0).to_csv(labels, index=False)
    stderr = refused(companydata, raw_dir, "etl")
    assert "labels.label_balance FAILED" in stderr and "every one of 500 labels is 0" in stderr
    frame.assign(label=(frame.idx == 0).astype(int)).to_csv(labels, index=False)
    result = etl(companydata, "etl", raw_dir=raw_dir)
    assert result.returncode == 0, result.stderr
    assert "labels.label_balance WARNING" in result.stderr and "ETL_MIN_LABEL_SHARE" in result.stderr


def test_mostly_empty_columns_are_a_warning(companydata, raw_dir) -> None:
    profiles = raw_dir / "customer_profiles.csv"
    frame = pd.read_csv(profiles)
    frame.loc[frame.idx % 10 != 0, "attr_b"] = None
    frame.to_csv(profiles, index=False)
    result = etl(companydata, "etl", raw_dir=raw_dir)
    assert result.returncode == 0, result.stderr
    assert "customer_profiles.null_share WARNING" in result.stderr and "attr_b 90.0%" in result.stderr
    assert "feature_store.null_share WARNING" in result.stderr


def test_new_categories_and_wider_ranges_are_loaded_with_a_warning_not_refused(companydata, raw_dir) -> None:
    """Real data moves: a new store category or an attribute beyond what was seen is scored by the
    model (as missing, flagged), so the ETL publishes it and says so; invariants stay errors."""
    profiles = raw_dir / "customer_profiles.csv"
    frame = pd.read_csv(profiles)
    frame.loc[frame.idx % 5 == 0, "attr_b"] = "e"
    frame.loc[frame.idx % 7 == 0, "attr_a"] = 9
    frame.to_csv(profiles, index=False)
    result = etl(companydata, "etl", raw_dir=raw_dir)
    assert result.returncode == 0, result.stderr
    assert "customer_profiles.value_domain WARNING" in result.stderr
    assert "'attr_b in a, b, c, d'" in result.stderr and "'attr_a in 1..5'" in result.stderr
    assert "feature_store.value_domain WARNING" in result.stderr
    assert companydata.query("SELECT count(*) FROM feature_store WHERE attr_b = 'e'")[0][0] > 0


def test_stale_sales_are_a_warning_relative_to_the_files_or_a_given_date(companydata, raw_dir, caplog) -> None:
    loaded(companydata, raw_dir)
    newest_loaded_only_january = CheckSettings(max_sales_age_months=1)
    with etl_transaction(companydata.settings("etl")) as cur:
        cur.execute("DELETE FROM sales WHERE sale_month > '2020-01-01'")
        (stale,) = [r for r in check_tables(cur, ["sales"], newest_loaded_only_january, raw_dir) if not r.passed]
        cur.connection.rollback()
    assert (stale.name, stale.severity, stale.counts["age_months"]) == ("sales.freshness", "warn", 2)
    assert "newest month in the raw files (2020-03)" in stale.message
    with etl_transaction(companydata.settings("etl")) as cur:
        as_of = CheckSettings(as_of=date(2020, 9, 17), max_sales_age_months=3)
        results = check_tables(cur, ["sales"], as_of, raw_dir)
        with caplog.at_level(logging.WARNING, logger="data_engineering.checks"):
            enforce(results)  # a warning never refuses
    (late,) = [r for r in results if not r.passed]
    assert late.counts["age_months"] == 6 and "ETL_AS_OF 2020-09-17" in late.message
    assert "sales.freshness WARNING" in caplog.text


# --- the API the orchestration package codes against ----------------------------------------------------


def test_every_table_reports_exactly_its_listed_checks(companydata, raw_dir) -> None:
    loaded(companydata, raw_dir)
    with etl_transaction(companydata.settings("etl")) as cur:
        load_customers(cur, raw_dir)
        load_sales(cur, raw_dir, [date(2020, 3, 1)])
        build_features(cur)
        results = check_tables(cur, PUBLISHED_TABLES, CheckSettings(), raw_dir)
        enforce(results)
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]
    for table in PUBLISHED_TABLES:
        assert [r.name for r in results if r.table == table] == list(CHECK_NAMES[table])
    assert set(PUBLISHED_TABLES) == {*CUSTOMER_TABLES, "sales", "monthly_sales", "feature_store"}
    staged = {r.name: r for r in results}["labels.row_count_drop"]
    assert staged.counts == {"staged_rows": 500, "published_rows": 500, "drop_share": 0.0, "max_drop_share": 0.1}


def test_a_missing_table_fails_its_columns_check_and_unknown_names_are_refused(companydata) -> None:
    with etl_transaction(companydata.settings("etl")) as cur:
        (result,) = check_tables(cur, ["feature_store"], CheckSettings())
        with pytest.raises(ValueError, match="no data checks for table"):
            check_tables(cur, ["predictions"], CheckSettings())
    assert (result.name, result.passed, result.severity) == ("feature_store.columns", False, "error")


def test_enforce_raises_only_for_failed_errors() -> None:
    warn = CheckResult("sales.freshness", "sales", "warn", False, "stale", {"age_months": 3})
    error = CheckResult("labels.not_empty", "labels", "error", False, "empty", {"rows": 0}, "raw/labels.csv")
    enforce([warn, dataclasses.replace(error, passed=True)])
    with pytest.raises(DataCheckFailed) as raised:
        enforce([warn, error])
    assert raised.value.results == [warn, error]
    assert "labels.not_empty (file: raw/labels.csv; rows=0): empty" in str(raised.value)
    assert "sales.freshness" not in str(raised.value)


def test_check_settings_come_from_the_environment() -> None:
    assert EtlSettings.from_env({}).checks == CheckSettings()
    env = {
        "ETL_MAX_DROP_SHARE": "0.2",
        "ETL_MAX_NULL_SHARE": "0.9",
        "ETL_MIN_LABEL_SHARE": "0.05",
        "ETL_MAX_SALES_AGE_MONTHS": "3",
        "ETL_AS_OF": "2022-11-01",
    }
    assert EtlSettings.from_env(env).checks == CheckSettings(0.2, False, 0.9, 0.05, 3, date(2022, 11, 1))
    with pytest.raises(ValueError, match=r"ETL_MAX_DROP_SHARE='1\.5'"):
        EtlSettings.from_env({"ETL_MAX_DROP_SHARE": "1.5"})


def test_every_sql_file_is_packaged() -> None:
    patterns = tomllib.loads((DE / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = DE / "src" / "data_engineering"
    files = [p.relative_to(package).as_posix() for p in package.rglob("*.sql")]
    assert files and all(
        any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in patterns["data_engineering"]) for f in files
    )
