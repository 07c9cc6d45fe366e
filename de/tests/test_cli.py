"""The command line as a user runs it: real processes, real database, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from data_engineering.cli import month_arg, previous_month
from testkit.fixtures import append_line


def etl(db, *args: str, raw_dir: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"RAW_DATA_DIR": str(raw_dir)} if raw_dir else {}
    return subprocess.run(
        [sys.executable, "-m", "data_engineering", *args],
        capture_output=True,
        text=True,
        env=db.env(**extra, **env),
        timeout=300,
    )


def test_etl_on_an_empty_raw_dir_generates_the_default_dataset_and_builds_everything(companydata, tmp_path) -> None:
    raw = tmp_path / "raw"
    result = etl(companydata, "etl", raw_dir=raw)
    assert result.returncode == 0, result.stderr
    assert "is empty: generating the default dataset there first" in result.stderr
    assert "build feature_store: 150,000 rows" in result.stderr
    assert companydata.query("SELECT count(*), count(DISTINCT sale_month) FROM sales")[0][1] == 34
    assert companydata.query("SELECT count(*) FROM feature_store")[0][0] == 150_000
    # A second run reloads the customers, skips the months already loaded, same tables.
    before = {t: companydata.digest(t) for t in companydata.created_tables()}
    again = etl(companydata, "etl", raw_dir=raw)
    assert again.returncode == 0 and "skipping 34 month(s) already loaded" in again.stderr
    assert {t: companydata.digest(t) for t in companydata.created_tables()} == before


def test_every_stage_three_times_gives_identical_tables(companydata, raw_dir) -> None:
    digests = []
    for _ in range(3):
        for stage in (
            ["load-customers"],
            ["load-sales", "--all", "--force"],
            ["load-sales", "--month", "2020-02"],
            ["build-features"],
        ):
            result = etl(companydata, *stage, raw_dir=raw_dir)
            assert result.returncode == 0, result.stderr
        digests.append({t: companydata.digest(t) for t in companydata.created_tables()})
    assert digests[0] == digests[1] == digests[2]
    assert len(digests[0]) == 7


def test_bad_input_exits_non_zero_naming_file_line_and_column(companydata, raw_dir) -> None:
    assert etl(companydata, "etl", raw_dir=raw_dir).returncode == 0
    before = {t: companydata.digest(t) for t in companydata.created_tables()}
    line = append_line(raw_dir / "customer_profiles.csv", "9999,x,a,yes")
    result = etl(companydata, "etl", "--force", raw_dir=raw_dir)
    assert result.returncode == 1
    assert f"customer_profiles.csv: line {line}, column attr_a: invalid input syntax" in result.stderr
    assert "nothing was changed in the database" in result.stderr
    assert "Traceback" not in result.stderr
    assert {t: companydata.digest(t) for t in companydata.created_tables()} == before


def test_load_sales_defaults_to_the_newest_month_in_the_raw_files_not_the_clock(companydata, raw_dir) -> None:
    # Deliberately changed (issue 13): the default used to be the previous calendar month, so the
    # same files loaded different months on different days.
    assert etl(companydata, "load-customers", raw_dir=raw_dir).returncode == 0
    result = etl(companydata, "load-sales", raw_dir=raw_dir)
    assert result.returncode == 0, result.stderr
    assert companydata.query("SELECT DISTINCT sale_month FROM sales") == [(date(2020, 3, 1),)]


def test_load_sales_all_skips_loaded_months_unless_forced(companydata, raw_dir) -> None:
    assert etl(companydata, "load-customers", raw_dir=raw_dir).returncode == 0
    assert etl(companydata, "load-sales", "--month", "2020-01", raw_dir=raw_dir).returncode == 0
    skipped = etl(companydata, "load-sales", "--all", raw_dir=raw_dir)
    assert "skipping 1 month(s) already loaded" in skipped.stderr and "load sales 2020-01" not in skipped.stderr
    forced = etl(companydata, "load-sales", "--all", "--force", raw_dir=raw_dir)
    assert "load sales 2020-01" in forced.stderr and "skipping" not in forced.stderr


def test_bad_month_argument_is_a_usage_error(companydata, raw_dir) -> None:
    result = etl(companydata, "load-sales", "--month", "2020-13", raw_dir=raw_dir)
    assert result.returncode == 2 and "'2020-13' is not a month in the form YYYY-MM" in result.stderr


def test_unreachable_database_is_retried_then_reported(companydata, raw_dir) -> None:
    result = etl(companydata, "build-features", DB_PORT="1", DB_CONNECT_TIMEOUT="1.5")
    assert result.returncode == 1
    assert "not ready (attempt 1" in result.stderr and "retrying in" in result.stderr
    assert "cannot reach the database" in result.stderr and "Traceback" not in result.stderr


def test_generate_command_writes_the_layout_and_truth(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_engineering",
            "generate",
            "--out",
            str(tmp_path / "g"),
            "--customers",
            "100",
            "--months",
            "2",
            "--seed",
            "1",
            "--truth",
            str(tmp_path / "truth.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "truth.csv").read_text().splitlines()) == 101
    assert sorted(p.name for p in (tmp_path / "g" / "sales").iterdir()) == ["2020-01-01", "2020-02-01"]


@pytest.mark.parametrize(("text", "month"), [("2022-10", date(2022, 10, 1)), ("1999-01", date(1999, 1, 1))])
def test_month_arg(text, month) -> None:
    assert month_arg(text) == month


def test_previous_month_wraps_the_year() -> None:
    assert previous_month(date(2021, 1, 15)) == date(2020, 12, 1)
    assert previous_month(date(2021, 3, 31)) == date(2021, 2, 1)


def test_empty_raw_dir_that_cannot_be_written_is_a_clear_error(companydata, tmp_path) -> None:
    raw = tmp_path / "raw"
    raw.write_text("")  # a file where the directory should be: nothing can be generated there
    result = etl(companydata, "load-customers", raw_dir=raw)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot generate the default dataset in {raw}: File exists" in result.stderr
