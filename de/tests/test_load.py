from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from data_engineering import DataError
from data_engineering.db import etl_transaction
from data_engineering.load import CUSTOMER_TABLES, available_months, load_customers, load_sales, loaded_months
from testkit.fixtures import TestDatabase, append_line, write_csv

JAN, FEB, MAR = date(2020, 1, 1), date(2020, 2, 1), date(2020, 3, 1)


def customers(db: TestDatabase, raw_dir: Path) -> None:
    with etl_transaction(db.settings("etl")) as cur:
        load_customers(cur, raw_dir)


def sales(db: TestDatabase, raw_dir: Path, months: list[date]) -> None:
    with etl_transaction(db.settings("etl")) as cur:
        load_sales(cur, raw_dir, months)


def digests(db: TestDatabase) -> dict[str, str]:
    return {t: db.digest(t) for t in sorted(db.created_tables())}


# --- load-customers --------------------------------------------------------------------


def test_each_customer_file_becomes_a_table_with_exactly_its_columns_and_values(companydata, raw_dir) -> None:
    customers(companydata, raw_dir)
    for table in CUSTOMER_TABLES:
        with (raw_dir / f"{table}.csv").open() as f:
            header, *lines = [line.rstrip("\n").split(",") for line in f]
        columns = [
            r[0]
            for r in companydata.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            )
        ]
        assert columns == header
        stored = companydata.query(f"SELECT * FROM {table}")
        as_text = sorted(
            ["" if v is None else repr(v) if isinstance(v, float) else str(v) for v in row] for row in stored
        )
        assert as_text == sorted(lines), table


def test_scd_a_keeps_full_double_precision(companydata, raw_dir) -> None:
    customers(companydata, raw_dir)
    text = (raw_dir / "customer_activity.csv").read_text().splitlines()[1].split(",")
    stored = companydata.query(
        "SELECT scd_a FROM customer_activity WHERE idx = %s AND valid_from = %s", (int(text[0]), text[1])
    )
    assert repr(stored[0][0]) == text[3]


def test_columns_are_matched_by_name_not_position(companydata, tmp_path, raw_dir) -> None:
    frame = pd.read_csv(raw_dir / "labels.csv")
    frame[["label", "idx"]].to_csv(raw_dir / "labels.csv", index=False)
    customers(companydata, raw_dir)
    assert companydata.query("SELECT label FROM labels WHERE idx = %s", (int(frame.idx[3]),))[0][0] == frame.label[3]


def test_load_customers_three_times_gives_identical_tables(companydata, raw_dir) -> None:
    customers(companydata, raw_dir)
    first = digests(companydata)
    customers(companydata, raw_dir)
    customers(companydata, raw_dir)
    assert digests(companydata) == first
    assert set(first) == set(CUSTOMER_TABLES)


@pytest.mark.parametrize(
    ("file", "line", "message"),
    [
        (
            "customer_profiles.csv",
            "7,notanumber,a,yes",
            r"customer_profiles\.csv: line \d+, column attr_a: invalid input syntax for type integer: \"notanumber\"",
        ),
        ("labels.csv", "0,1", r"labels\.csv: line \d+: duplicate key .*\(idx\)=\(0\) already exists"),
        ("labels.csv", "100000,2", r"labels\.csv: line \d+: .*label_is_0_or_1"),
        ("labels.csv", "100001,", r"labels\.csv: line \d+, column label: null value in column \"label\""),
        ("labels.csv", "100002", r"labels\.csv: line \d+: missing data for column \"label\""),
        ("labels.csv", "100003,1,1", r"labels\.csv: line \d+: extra data after last expected column"),
        (
            "customer_activity.csv",
            "100000,2020-02-30,,0.5,1",
            r"customer_activity\.csv: line \d+, column valid_from: date/time field value out of range: \"2020-02-30\"",
        ),
        (
            "customer_activity.csv",
            "100000,2020-03-01,2020-02-01,0.5,1",
            r"customer_activity\.csv: line \d+: .*valid_to_after_valid_from",
        ),
        (
            "customer_activity.csv",
            "0,2021-01-01,,0.5,1",
            r"customer_activity\.csv: line \d+: .*one_open_row_per_client.*\(idx\)=\(0\)",
        ),
        ("stores.csv", "1,Porto", r"stores\.csv: line \d+: duplicate key .*\(idx\)=\(1\)"),
    ],
)
def test_bad_rows_name_file_line_and_column_and_change_nothing(companydata, raw_dir, file, line, message) -> None:
    customers(companydata, raw_dir)
    before = digests(companydata)
    number = append_line(raw_dir / file, line)
    with pytest.raises(DataError, match=message) as err:
        customers(companydata, raw_dir)
    assert f"line {number}" in str(err.value)
    assert digests(companydata) == before


def test_a_gap_in_a_clients_history_is_refused_with_the_client_and_dates(companydata, raw_dir) -> None:
    activity = raw_dir / "customer_activity.csv"
    lines = activity.read_text().splitlines()
    # Client 100000: a closed period that ends before its next one starts.
    lines += ["100000,2020-01-01,2020-02-01,0.1,1", "100000,2020-03-01,,0.2,2"]
    activity.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataError,
        match=rf"line {len(lines) - 1}, client idx 100000: the period starting 2020-01-01 ends 2020-02-01, "
        "but the client's next period starts 2020-03-01",
    ):
        customers(companydata, raw_dir)
    assert companydata.created_tables() == set()


def test_bad_last_row_of_the_last_file_leaves_the_previous_load_in_place(companydata, raw_dir, small_dataset) -> None:
    """A failure injected after three tables are already staged rolls everything back."""
    customers(companydata, raw_dir)
    before = digests(companydata)
    # New, valid content for every table ... and a broken row at the very end of stores.csv.
    for table in CUSTOMER_TABLES[:3]:
        frame = pd.read_csv(raw_dir / f"{table}.csv", dtype=str, keep_default_na=False)
        frame.iloc[: len(frame) // 2].to_csv(raw_dir / f"{table}.csv", index=False)
    append_line(raw_dir / "stores.csv", "6,")
    with pytest.raises(DataError, match=r"stores\.csv"):
        customers(companydata, raw_dir)
    assert digests(companydata) == before


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("labels.csv", "idx\n1\n", r"labels\.csv: line 1 \(header\): missing column\(s\) label"),
        ("labels.csv", "idx,label,score\n1,0,3\n", r"labels\.csv: line 1 \(header\): unexpected column\(s\) score"),
        ("labels.csv", "idx,label,label\n", r"duplicated column\(s\) label"),
        ("stores.csv", "", r"stores\.csv: file is empty"),
    ],
)
def test_bad_headers_are_refused(companydata, raw_dir, file, content, message) -> None:
    (raw_dir / file).write_text(content)
    with pytest.raises(DataError, match=message):
        customers(companydata, raw_dir)
    assert companydata.created_tables() == set()


def test_missing_file_is_named(companydata, raw_dir) -> None:
    (raw_dir / "labels.csv").unlink()
    with pytest.raises(DataError, match=r"missing input file\(s\): .*labels\.csv"):
        customers(companydata, raw_dir)


def test_not_utf8_is_refused(companydata, raw_dir) -> None:
    (raw_dir / "stores.csv").write_bytes("idx,location\n1,K\xf8benhavn\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"stores\.csv: line 2.*UTF8"):
        customers(companydata, raw_dir)


# --- load-sales ------------------------------------------------------------------------

STORES = "idx,location\n1,New York\n2,Lisbon\n"


@pytest.fixture
def sales_raw(companydata, tmp_path) -> Path:
    """Hand-made stores and two months of sales, with customers loaded."""
    raw = tmp_path / "hand"
    write_csv(raw / "stores.csv", STORES)
    write_csv(raw / "customer_profiles.csv", "idx,attr_a,attr_b,attr_c\n1,1,a,yes\n")
    write_csv(raw / "customer_activity.csv", "idx,valid_from,valid_to,scd_a,scd_b\n1,2020-01-01,,0.5,1\n")
    write_csv(raw / "labels.csv", "idx,label\n1,0\n")
    write_csv(
        raw / "sales/2020-01-01/sales.csv",
        "idx,value,date,store_idx\n1,1.1,2020-01-03,1\n2,2.25,2020-01-31,1\n3,0.5,2020-01-15,2\n",
    )
    write_csv(raw / "sales/2020-02-01/sales.csv", "idx,value,date,store_idx\n1,4.0,2020-02-29,2\n")
    customers(companydata, raw)
    return raw


def monthly(db: TestDatabase) -> list[tuple]:
    return db.query("SELECT store_idx, location, sale_month, value FROM monthly_sales ORDER BY sale_month, store_idx")


def test_a_month_lands_in_sales_and_is_aggregated_exactly(companydata, sales_raw) -> None:
    sales(companydata, sales_raw, [JAN])
    assert companydata.query("SELECT count(*) FROM sales")[0][0] == 3
    assert monthly(companydata) == [(1, "New York", JAN, Decimal("3.35")), (2, "Lisbon", JAN, Decimal("0.5"))]


def test_rerunning_a_month_replaces_it_and_never_duplicates(companydata, sales_raw) -> None:
    sales(companydata, sales_raw, [JAN, FEB])
    write_csv(sales_raw / "sales/2020-01-01/sales.csv", "idx,value,date,store_idx\n9,7.0,2020-01-09,2\n")
    for _ in range(3):
        sales(companydata, sales_raw, [JAN])
    assert monthly(companydata) == [(2, "Lisbon", JAN, Decimal("7.0")), (2, "Lisbon", FEB, Decimal("4.0"))]
    assert companydata.query("SELECT sale_month, count(*) FROM sales GROUP BY 1 ORDER BY 1") == [(JAN, 1), (FEB, 1)]


def test_loaded_and_available_months(companydata, sales_raw) -> None:
    (sales_raw / "sales" / "notes").mkdir()
    assert available_months(sales_raw) == [JAN, FEB]
    sales(companydata, sales_raw, [FEB])
    with etl_transaction(companydata.settings("etl")) as cur:
        assert loaded_months(cur) == {FEB}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("4,1.0,2020-02-01,1", r"line 5: .*date_in_file_month"),
        ("4,1.0,2020-01-02,3", r"line 5, column store_idx: store 3 is not in stores\.csv"),
        ("1,1.0,2020-01-02,1", r"line 5: duplicate key .*\(idx\)=\(1\)"),
        ("4,abc,2020-01-02,1", r"line 5, column value: invalid input syntax for type numeric: \"abc\""),
    ],
)
def test_bad_sales_rows_are_refused_and_change_nothing(companydata, sales_raw, line, message) -> None:
    sales(companydata, sales_raw, [FEB])
    before = digests(companydata)
    append_line(sales_raw / "sales/2020-01-01/sales.csv", line)
    with pytest.raises(DataError, match=r"sales/2020-01-01/sales\.csv: " + message):
        sales(companydata, sales_raw, [FEB, JAN])
    assert digests(companydata) == before


def test_month_without_a_file_is_named(companydata, sales_raw) -> None:
    with pytest.raises(DataError, match=r"no sales file for 2020-03: expected .*sales/2020-03-01/sales\.csv"):
        sales(companydata, sales_raw, [JAN, MAR])
    assert "sales" not in companydata.created_tables()


def test_sales_before_customers_says_what_to_do(companydata, tmp_path) -> None:
    with pytest.raises(DataError, match="run load-customers before load-sales"):
        sales(companydata, tmp_path, [JAN])
