from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from data_engineering.generate import GeneratorConfig, generate, true_probability


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.csv")):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    config = GeneratorConfig(customers=2_000, months=2, seed=11)
    generate(tmp_path / "a", config)
    generate(tmp_path / "b", config)
    generate(tmp_path / "c", GeneratorConfig(customers=2_000, months=2, seed=12))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_layout_and_columns_follow_the_source_bucket(small_dataset: Path) -> None:
    assert pd.read_csv(small_dataset / "customer_profiles.csv").columns.tolist() == [
        "idx",
        "attr_a",
        "attr_b",
        "attr_c",
    ]
    assert pd.read_csv(small_dataset / "customer_activity.csv").columns.tolist() == [
        "idx",
        "valid_from",
        "valid_to",
        "scd_a",
        "scd_b",
    ]
    assert pd.read_csv(small_dataset / "labels.csv").columns.tolist() == ["idx", "label"]
    assert pd.read_csv(small_dataset / "stores.csv")["location"].tolist() == [
        "New York",
        "Lisbon",
        "London",
        "Berlin",
        "Paris",
    ]
    months = sorted(p.parent.name for p in (small_dataset / "sales").glob("*/sales.csv"))
    assert months == ["2020-01-01", "2020-02-01", "2020-03-01"]
    sales = pd.read_csv(small_dataset / "sales" / "2020-02-01" / "sales.csv")
    assert sales.columns.tolist() == ["idx", "value", "date", "store_idx"]
    assert sales["idx"].is_unique
    assert sales["date"].str.startswith("2020-02-").all()
    assert sales["value"].between(0, 10).all() and sales["store_idx"].between(1, 5).all()


def test_activity_history_chains_and_has_one_open_row_per_client(tmp_path: Path) -> None:
    generate(tmp_path, GeneratorConfig(customers=20_000, months=34, seed=3))
    activity = pd.read_csv(tmp_path / "customer_activity.csv", dtype={"valid_to": str}).sort_values(
        ["idx", "valid_from"]
    )
    assert (activity.groupby("idx")["valid_to"].apply(lambda s: s.isna().sum()) == 1).all()
    assert (activity.groupby("idx")["valid_from"].min() == "2020-01-01").all()
    nxt = activity.groupby("idx")["valid_from"].shift(-1)
    closed = activity["valid_to"].notna()
    assert (activity.loc[closed, "valid_to"] == nxt[closed]).all()
    assert (activity.loc[closed, "valid_to"] > activity.loc[closed, "valid_from"]).all()
    with_history = activity.groupby("idx").size().gt(1).mean()
    assert 0.08 < with_history < 0.13  # about 11 % of clients, as in the real data


def test_label_is_imbalanced_and_follows_the_truth_file(tmp_path: Path) -> None:
    generate(tmp_path / "raw", GeneratorConfig(customers=50_000, months=1, seed=5), truth=tmp_path / "truth.csv")
    labels = pd.read_csv(tmp_path / "raw" / "labels.csv")
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert truth["idx"].tolist() == labels["idx"].tolist()
    assert 0.07 < labels["label"].mean() < 0.12
    # The labels are draws from the truth: positives have a clearly higher true probability.
    by_label = truth["p_label"].groupby(labels["label"]).mean()
    assert by_label[1] > 1.5 * by_label[0]


def test_true_probability_handles_clients_without_activity() -> None:
    p = true_probability(np.array([3, 3]), np.array(["d", "d"]), np.array([np.nan, 0.7]), np.array([np.nan, 5.0]))
    assert np.isfinite(p).all() and p[1] > p[0]
