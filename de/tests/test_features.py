from __future__ import annotations

import threading
from pathlib import Path

import pytest

from data_engineering import DataError
from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.load import load_customers
from testkit.fixtures import write_csv

ACTIVITY = """
idx,valid_from,valid_to,scd_a,scd_b
1,2020-01-01,,0.11,1
2,2020-01-01,2020-05-01,0.21,2
2,2020-05-01,2021-01-01,0.22,3
2,2021-01-01,,0.23,4
3,2020-01-01,2020-03-01,0.31,5
3,2020-03-01,2020-09-01,0.32,1
5,2020-01-01,,0.51,2
"""


def load(db, raw: Path) -> None:
    with etl_transaction(db.settings("etl")) as cur:
        load_customers(cur, raw)
        build_features(cur)


@pytest.fixture
def edge_cases(tmp_path: Path) -> Path:
    raw = tmp_path / "edge_cases"
    # 1: one open row. 2: history, open row last. 3: history closed for good (no open row).
    # 4: no activity at all. 5: activity and label but no profile. 6: profile but no label.
    write_csv(
        raw / "customer_profiles.csv", "idx,attr_a,attr_b,attr_c\n1,1,a,yes\n2,2,b,no\n3,3,c,yes\n4,4,d,no\n6,5,a,no\n"
    )
    write_csv(raw / "labels.csv", "idx,label\n1,0\n2,1\n3,0\n4,1\n5,1\n")
    write_csv(raw / "customer_activity.csv", ACTIVITY)
    write_csv(raw / "stores.csv", "idx,location\n1,Lisbon\n")
    return raw


def test_feature_store_takes_each_clients_latest_activity(companydata, edge_cases) -> None:
    load(companydata, edge_cases)
    assert companydata.query("SELECT * FROM feature_store ORDER BY idx") == [
        (1, 1, "a", 0.11, 1, 0),  # the open row
        (2, 2, "b", 0.23, 4, 1),  # the open row, not an older one
        (3, 3, "c", 0.32, 1, 0),  # no open row: the greatest valid_from
        (4, 4, "d", None, None, 1),  # no activity: NULL features, client kept
    ]  # 5 has no profile and 6 no label: both left out


def test_feature_store_columns_and_types(companydata, edge_cases) -> None:
    load(companydata, edge_cases)
    assert companydata.query(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'feature_store' ORDER BY ordinal_position"
    ) == [
        ("idx", "integer"),
        ("attr_a", "integer"),
        ("attr_b", "text"),
        ("scd_a", "double precision"),
        ("scd_b", "integer"),
        ("label", "smallint"),
    ]


def test_build_features_three_times_gives_identical_table(companydata, raw_dir) -> None:
    load(companydata, raw_dir)
    first = companydata.digest("feature_store")
    for _ in range(2):
        with etl_transaction(companydata.settings("etl")) as cur:
            build_features(cur)
    assert companydata.digest("feature_store") == first
    assert first.startswith("500:")


def test_build_features_without_customer_tables_says_what_to_do(companydata) -> None:
    missing = "customer_profiles, customer_activity, labels missing: run load-customers"
    with pytest.raises(DataError, match=missing), etl_transaction(companydata.settings("etl")) as cur:
        build_features(cur)


def test_readers_see_the_old_table_or_the_new_one_never_a_partial_one(companydata, raw_dir, edge_cases) -> None:
    load(companydata, raw_dir)  # 500 rows
    old, new = 500, 4
    seen: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                seen.add(companydata.query("SELECT count(*) FROM feature_store", role="ds")[0][0])
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    while not seen and not errors:
        stop.wait(0.01)
    try:
        for raw in [edge_cases, raw_dir, edge_cases]:
            load(companydata, raw)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert not errors
    assert seen <= {old, new} and old in seen
